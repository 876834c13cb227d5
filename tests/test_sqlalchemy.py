"""Enqueue through SQLAlchemy: the job joins the Connection's or Session's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgjobs import App, SchemaNotMigratedError


def committed_jobs(observer: psycopg.Connection[Any], schema: str) -> list[tuple[int, str]]:
    """(id, task) of every committed job of the schema."""
    query = sql.SQL("SELECT id, task FROM {} ORDER BY id").format(sql.Identifier(schema, "jobs"))
    return [(row[0], row[1]) for row in observer.execute(query).fetchall()]


def committed_orders(observer: psycopg.Connection[Any], schema: str) -> list[str]:
    query = sql.SQL("SELECT note FROM {} ORDER BY id").format(sql.Identifier(schema, "orders"))
    return [row[0] for row in observer.execute(query).fetchall()]


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine on SQLAlchemy's psycopg 3 driver, as an application would have."""
    engine = sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(database_url)
    )
    yield engine
    engine.dispose()


@pytest.fixture
def order_model(engine: sa.Engine, schema: str) -> type[Any]:
    """An ORM model of an application table, `<schema>.orders`, created for the test."""

    class Base(DeclarativeBase):
        pass

    class Order(Base):
        __tablename__ = "orders"
        __table_args__ = {"schema": schema}  # noqa: RUF012 (declarative API)

        id: Mapped[int] = mapped_column(primary_key=True)
        note: Mapped[str]

    Base.metadata.create_all(engine)
    return Order


def test_enqueue_on_committed_sqlalchemy_connection_creates_job(
    app: App, engine: sa.Engine, observer: psycopg.Connection[Any], schema: str
) -> None:
    with engine.connect() as connection:
        job_id = app.enqueue(connection, "email.send", {"to": "a@example.com"})
        assert committed_jobs(observer, schema) == []
        connection.commit()

    assert committed_jobs(observer, schema) == [(job_id, "email.send")]


def test_rolled_back_sqlalchemy_connection_leaves_no_job(
    app: App, engine: sa.Engine, observer: psycopg.Connection[Any], schema: str
) -> None:
    with engine.connect() as connection:
        app.enqueue(connection, "email.send", {"to": "a@example.com"})
        connection.rollback()

    assert committed_jobs(observer, schema) == []


def test_enqueue_on_committed_session_creates_job(
    app: App, engine: sa.Engine, observer: psycopg.Connection[Any], schema: str
) -> None:
    with Session(engine) as session:
        job_id = app.enqueue(session, "email.send", {"to": "a@example.com"})
        assert committed_jobs(observer, schema) == []
        session.commit()

    assert committed_jobs(observer, schema) == [(job_id, "email.send")]


def test_rolled_back_session_leaves_no_job(
    app: App, engine: sa.Engine, observer: psycopg.Connection[Any], schema: str
) -> None:
    with Session(engine) as session:
        app.enqueue(session, "email.send", {"to": "a@example.com"})
        session.rollback()

    assert committed_jobs(observer, schema) == []


def test_job_and_application_row_commit_together_in_a_session(
    app: App,
    engine: sa.Engine,
    order_model: type[Any],
    observer: psycopg.Connection[Any],
    schema: str,
) -> None:
    with Session(engine) as session:
        session.add(order_model(note="order 42"))
        session.flush()
        job_id = app.enqueue(session, "orders.confirm", {"order": 42})
        session.commit()

    assert committed_orders(observer, schema) == ["order 42"]
    assert committed_jobs(observer, schema) == [(job_id, "orders.confirm")]


def test_job_and_application_row_roll_back_together_in_a_session(
    app: App,
    engine: sa.Engine,
    order_model: type[Any],
    observer: psycopg.Connection[Any],
    schema: str,
) -> None:
    with Session(engine) as session:
        session.add(order_model(note="order 42"))
        session.flush()
        app.enqueue(session, "orders.confirm", {"order": 42})
        session.rollback()

    assert committed_orders(observer, schema) == []
    assert committed_jobs(observer, schema) == []


def test_job_and_application_row_commit_together_on_a_connection(
    app: App,
    engine: sa.Engine,
    order_model: type[Any],
    observer: psycopg.Connection[Any],
    schema: str,
) -> None:
    orders = order_model.__table__
    with engine.connect() as connection:
        connection.execute(sa.insert(orders).values(note="order 7"))
        job_id = app.enqueue(connection, "orders.confirm", {"order": 7})
        connection.commit()

    assert committed_orders(observer, schema) == ["order 7"]
    assert committed_jobs(observer, schema) == [(job_id, "orders.confirm")]


def test_job_and_application_row_roll_back_together_on_a_connection(
    app: App,
    engine: sa.Engine,
    order_model: type[Any],
    observer: psycopg.Connection[Any],
    schema: str,
) -> None:
    orders = order_model.__table__
    with engine.connect() as connection:
        connection.execute(sa.insert(orders).values(note="order 7"))
        app.enqueue(connection, "orders.confirm", {"order": 7})
        connection.rollback()

    assert committed_orders(observer, schema) == []
    assert committed_jobs(observer, schema) == []


def test_enqueue_many_through_a_session_returns_ids_in_order(
    app: App, engine: sa.Engine, observer: psycopg.Connection[Any], schema: str
) -> None:
    with Session(engine) as session:
        ids = app.enqueue_many(session, [("t", {"n": n}) for n in range(3)])
        session.commit()

    assert [job_id for job_id, _ in committed_jobs(observer, schema)] == ids


def test_engine_on_another_driver_is_rejected_with_a_clear_type_error(app: App) -> None:
    # psycopg2, pg8000 and asyncpg are not installed here; SQLite's stdlib driver is enough
    # to exercise the check, which looks only at the driver's name.
    other = sa.create_engine("sqlite://")

    with other.connect() as connection, pytest.raises(TypeError, match="psycopg") as info:
        app.enqueue(connection, "t", {})
    other.dispose()

    assert "'pysqlite'" in str(info.value)


@pytest.mark.parametrize("not_a_connection", ["postgresql://localhost/db", 42, object()])
def test_something_that_is_not_a_connection_is_rejected(app: App, not_a_connection: object) -> None:
    with pytest.raises(TypeError, match="conn must be a psycopg Connection"):
        app.enqueue(not_a_connection, "t", {})


def test_enqueue_through_sqlalchemy_into_an_unmigrated_schema_says_to_migrate(
    database_url: str, engine: sa.Engine
) -> None:
    app = App(database_url, schema="never_migrated_for_sqlalchemy")

    with Session(engine) as session, pytest.raises(SchemaNotMigratedError, match="pgjobs migrate"):
        app.enqueue(session, "t", {})
