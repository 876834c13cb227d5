"""A small shop: an order enqueues its receipt, which enqueues the loyalty points."""

from __future__ import annotations

from typing import Any

import pgjobs

app = pgjobs.App()  # PGJOBS_DATABASE_URL and PGJOBS_SCHEMA
outbox: list[str] = []  # stands for the mail service


def place_order(conn: Any, email: str, total: int) -> int:
    """Record an order and enqueue its receipt, in the caller's transaction."""
    [(order_id,)] = conn.execute(
        "INSERT INTO orders (email, total) VALUES (%s, %s) RETURNING id", [email, total]
    ).fetchall()
    send_receipt.enqueue(conn, order_id=order_id, email=email)
    return int(order_id)


@app.task(name="shop.send_receipt", queue="mail", max_attempts=5)
def send_receipt(order_id: int, email: str) -> None:
    if email.endswith(".invalid"):
        raise pgjobs.FailJob(f"undeliverable address {email}")
    outbox.append(f"receipt for order {order_id} to {email}")
    award_points.enqueue(None, order_id=order_id)  # pgjobs' own connection


@app.task(name="shop.award_points")
def award_points(order_id: int) -> None:
    outbox.append(f"points for order {order_id}")


@app.periodic(cron="0 3 * * *")
@app.task(name="shop.nightly_report", queue="reports")
def nightly_report() -> None:
    outbox.append("nightly report")
