"""The shop as an ASGI application: `uvicorn shop.asgi:application` from this folder.

Django serves the shop; pgjobs' dashboard (`pgjobs.web`, the `web` extra) is mounted
beside it at /jobs/, read-only and for this machine's own browser only. For a dashboard
that asks Django who the user is (staff look, superusers act), see docs/dashboard.md,
"Django".
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django_app = get_asgi_application()  # first: it sets Django, and the shop's App, up

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import HTTPConnection  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from pgjobs.contrib.django import get_app  # noqa: E402
from pgjobs.web import create_app  # noqa: E402


def local_readers(request: HTTPConnection) -> str | None:
    """Look, from this machine only; change nothing."""
    client = request.client.host if request.client else None
    return "read" if client in ("127.0.0.1", "::1") else None


application = Starlette(
    routes=[
        Mount("/jobs", app=create_app(get_app(), authorize=local_readers)),
        Mount("/", app=django_app),
    ]
)
