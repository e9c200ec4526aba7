"""Dashboard pages from Jinja2 templates (autoescaped), with the headers every admin page
carries: a strict Content-Security-Policy (our own scripts and styles only, so the page
works offline and injected markup cannot run), no framing, no caching of account data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from api.admin.session import CSRF_FIELD, AdminSession
from meter.times import rfc3339


def _api_data_dir(name: str) -> Path:
    """A data folder of the api package (package data in the wheel), found through
    importlib.resources. pip installs a wheel unpacked, so it is a folder on disk, which
    Jinja's file loader and Starlette's StaticFiles need."""
    folder = files("api").joinpath(name)
    if not isinstance(folder, Path) or not folder.is_dir():
        raise RuntimeError(f"api/{name} is missing from the installed package")
    return folder


TEMPLATES_DIR: Final = _api_data_dir("templates")
STATIC_DIR: Final = _api_data_dir("static")
STATIC_PATH: Final = "/admin/static"

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters["ts"] = lambda ms: rfc3339(ms) if ms else "never"
templates.env.globals["csrf_field"] = CSRF_FIELD
templates.env.globals["static"] = STATIC_PATH


def page(
    request: Request,
    template: str,
    session: AdminSession | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    response = templates.TemplateResponse(
        request,
        template,
        {"session": session, **context},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response
