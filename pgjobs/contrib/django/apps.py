"""The Django app: `"pgjobs.contrib.django"` in `INSTALLED_APPS`."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class PgjobsConfig(AppConfig):
    """pgjobs in a Django project: its commands (`pgjobs_migrate`, `pgjobs_work`), and
    `PGJOBS_APP` pointed at the database and schema of the settings once the apps are
    ready, before any of its tasks enqueues."""

    name = "pgjobs.contrib.django"
    label = "pgjobs"
    verbose_name = "pgjobs"

    def ready(self) -> None:
        if getattr(settings, "PGJOBS_APP", None):
            from pgjobs.contrib.django.conf import get_app

            get_app()
