"""A FastAPI service that enqueues a job in its request's transaction (SQLAlchemy AsyncSession).

The signup row and the welcome email's job commit together, or neither does: a second
signup with the same address fails at the commit, and its job is rolled back with it.

    pip install "pgjobs-queue" fastapi uvicorn "sqlalchemy[asyncio]"
    export DATABASE_URL=postgresql+psycopg://user:password@localhost/app
    pgjobs migrate
    uvicorn examples.fastapi_app:api                 # the web service
    pgjobs work --app examples.fastapi_app:jobs      # runs send_welcome
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgjobs

DATABASE_URL = os.environ["DATABASE_URL"]
# pgjobs takes the URL as it is; SQLAlchemy must drive it with psycopg 3, as pgjobs does.
engine = create_async_engine(make_url(DATABASE_URL).set(drivername="postgresql+psycopg"))
Session = async_sessionmaker(engine, expire_on_commit=False)
jobs = pgjobs.App(DATABASE_URL)
log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class Signup(Base):
    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)


@jobs.task(name="mail.welcome", queue="mail", max_attempts=5, timeout=30)
async def send_welcome(email: str) -> None:
    """Runs on the worker's event loop; awaits its I/O like any coroutine."""
    await asyncio.sleep(0.01)  # stands for an async SMTP or HTTP call
    log.info("welcome mail sent to %s", email)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await jobs.aclose()  # pgjobs' own pools (used by enqueue_async(None, ...))
    await engine.dispose()


api = FastAPI(lifespan=lifespan)


async def session() -> AsyncIterator[AsyncSession]:
    """One session per request; whatever it did not commit is rolled back at the end."""
    async with Session() as db:
        yield db


class SignupIn(BaseModel):
    email: str


class SignupOut(BaseModel):
    id: int
    job_id: int


@api.post("/signups", status_code=201)
async def sign_up(body: SignupIn, db: Annotated[AsyncSession, Depends(session)]) -> SignupOut:
    signup = Signup(email=body.email)
    db.add(signup)
    job_id = await send_welcome.enqueue_async(db, email=body.email)  # same transaction
    try:
        await db.commit()  # the row and the job, together
    except IntegrityError:
        raise HTTPException(409, "this address signed up already") from None
    return SignupOut(id=signup.id, job_id=job_id)
