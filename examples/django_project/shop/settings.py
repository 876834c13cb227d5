"""Settings of the example shop: its orders and their jobs in one PostgreSQL database.

`DATABASE_URL` names the database (`postgresql://user:password@host/dbname`);
`PGJOBS_SCHEMA` the schema of the jobs (default `pgjobs`).
"""

import os
from typing import Any

import django
from psycopg.conninfo import conninfo_to_dict


def database(url: str) -> dict[str, Any]:
    """A `DATABASES` entry from a PostgreSQL URL."""
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", ""),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,  # sslmode, options, ...
    }


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": database(os.environ["DATABASE_URL"])}

INSTALLED_APPS = [
    "pgjobs.contrib.django",  # manage.py pgjobs_migrate / pgjobs_work
    "orders",
]
if django.VERSION < (6,):
    INSTALLED_APPS.append("django_tasks")  # Django 5.2: the Tasks framework's backport

PGJOBS_APP = "shop.jobs:app"  # the App of the pgjobs tasks
PGJOBS_SCHEMA = os.environ.get("PGJOBS_SCHEMA", "pgjobs")  # where the jobs live
# PGJOBS_DATABASE_URL is unset: the jobs are in DATABASES["default"], beside the orders.
TASKS = {
    "default": {
        "BACKEND": "pgjobs.contrib.django.PgjobsBackend",
        "QUEUES": ["default", "mail"],
    }
}
