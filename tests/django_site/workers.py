"""`DjangoWorker`: a real `manage.py pgjobs_work` process, watched like `WorkerProcess`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import make_conninfo

from tests.helpers import REPO_ROOT, WorkerProcess

# The `start_django_worker` fixture's type: start_django_worker(*args, **DjangoWorker options).
StartDjangoWorker = Callable[..., "DjangoWorker"]


class DjangoWorker(WorkerProcess):
    """`manage.py pgjobs_work ARGS` of a Django project, started from `cwd`.

    The project's settings read their database from the environment variable `url_variable`
    (set to the test server's URL with the worker's own `application_name`, by which
    `wait_ready` tells its connections apart) and their schema from `PGJOBS_SCHEMA`. By
    default the project is the tests' own (tests/django_site).
    """

    def __init__(
        self,
        database_url: str,
        schema: str,
        *args: str,
        manage: tuple[str, ...] = ("-m", "django"),
        settings: str | None = "tests.django_site.settings",
        cwd: Path = REPO_ROOT,
        url_variable: str = "PGJOBS_DJANGO_TEST_DATABASE_URL",
    ) -> None:
        super().__init__(database_url, schema, *args)
        self.manage = manage
        self.settings = settings
        self.cwd = cwd
        self.url_variable = url_variable

    @property
    def command(self) -> list[str]:
        """`python -m django pgjobs_work --settings ...` or `python manage.py pgjobs_work`."""
        settings = ["--settings", self.settings] if self.settings else []
        return [sys.executable, *self.manage, "pgjobs_work", *settings, *self.args]

    def start(self) -> DjangoWorker:
        """Start the process (returns at once; see `wait_ready`)."""
        if self.process is not None:
            raise RuntimeError("worker already started")
        url = make_conninfo(self.database_url, application_name=self.application_name)
        env = {
            **os.environ,
            self.url_variable: url,
            "PGJOBS_SCHEMA": self.schema,
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self
