"""`manage.py pgjobs_work`: `pgjobs work` for the project's App and its Django tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pgjobs.contrib.django import conf
from pgjobs.contrib.django.commands import PgjobsCommand, reported


class Command(PgjobsCommand):
    """Run a worker for `PGJOBS_APP` (or `--app`) and every Django task of the backend."""

    help = (
        "Run a worker, like `pgjobs work`, for the PGJOBS_APP setting's App (or --app) and "
        "the Django tasks of pgjobs' Tasks backend, on the database of the settings."
    )
    pgjobs_command = "work"
    option_help: ClassVar[Mapping[str, str]] = {
        "app_reference": "The App to serve, as module:attribute. Default: the PGJOBS_APP "
        "setting, else an App of the Django tasks alone. The Django tasks are served too.",
    }

    def handle(self, *args: Any, **options: Any) -> None:
        from pgjobs.cli.work import work
        from pgjobs.contrib.django.serving import serve

        with reported():
            values = self.given(options)
            reference = values.pop("app_reference", None)
            if reference:
                conf.use_app(conf.load_app(reference, "--app"))
            serve(conf.get_app())
            # `pgjobs work` loads the App by reference: this process's, prepared above.
            work(conf.APP_REFERENCE, **values)
