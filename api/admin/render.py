"""Dashboard pages from Jinja2 templates (autoescaped), with the headers every admin page
carries: a strict Content-Security-Policy (our own scripts and styles only, so the page
works offline and injected markup cannot run), no framing, no caching of account data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from api.admin.session import CSRF_FIELD, AdminSession
from api.schemas import rfc3339

HERE = Path(__file__).resolve().parent.parent
TEMPLATES_DIR: Final = HERE / "templates"
STATIC_DIR: Final = HERE / "static"
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
