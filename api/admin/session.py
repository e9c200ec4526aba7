"""The dashboard's login: an admin API key exchanged for a session cookie, and CSRF tokens.

- A live key of scope `admin` posted to /admin/login opens a session. The cookie holds 32
  random bytes; Redis keeps only their SHA-256 (`Keys.admin_session`), with the key's id and
  prefix and the session's CSRF token, for SESSION_TTL_S. Logging out deletes it.
- The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
  Path=/admin, and Secure when the request came over https.
- Every form carries the session's CSRF token; a POST without the right one is 403 even with
  a valid cookie. The login form, before any session exists, uses a double-submit token: a
  random value in a short-lived cookie that the form echoes.
- Each request re-checks in SQL that the key is live, so revoking the key ends its sessions.
  The dashboard reads SQL on every page anyway: while SQL is down a session check answers
  503 `database-unavailable` (problem+json), never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import parse_qsl

from fastapi import Depends, Request, Response
from redis.typing import EncodableT, FieldT
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.errors import Problem
from api.state import AppState, get_state
from sync.apikeys import live_key

SESSION_TTL_S: Final = 8 * 3600  # a working day; then the admin logs in again
LOGIN_TOKEN_TTL_S: Final = 3600  # how long a login page may sit open before it is submitted
FORM_BYTES_MAX: Final = 16 * 1024  # the largest dashboard form (an adjustment) is < 1 KiB
SESSION_COOKIE: Final = "cm_admin"
LOGIN_COOKIE: Final = "cm_admin_login"
COOKIE_PATH: Final = "/admin"
CSRF_FIELD: Final = "csrf_token"
FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class AdminSession:
    key_id: str
    key_prefix: str
    csrf_token: str

    @property
    def actor(self) -> str:
        """Who did it, for the audit log: the key's id, as on the JSON API."""
        return self.key_id


class LoginRequired(Exception):
    """A dashboard page asked for without a live session: answered by a redirect to login."""


def _text(value: bytes | str) -> str:
    """The balance Redis answers bytes; its stubs allow str as well."""
    return value.decode() if isinstance(value, bytes) else value


def _digest(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


def _set_cookie(
    response: Response, request: Request, name: str, value: str, max_age_s: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def open_session(
    state: AppState, request: Request, response: Response, key_id: str, key_prefix: str
) -> None:
    cookie_value = secrets.token_urlsafe(32)
    name = state.keys.admin_session(_digest(cookie_value))
    fields: dict[FieldT, EncodableT] = {
        "key_id": key_id,
        "key_prefix": key_prefix,
        "csrf": secrets.token_urlsafe(32),
    }
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.hset(name, mapping=fields)
        pipe.expire(name, SESSION_TTL_S)
        await pipe.execute()
    _set_cookie(response, request, SESSION_COOKIE, cookie_value, SESSION_TTL_S)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


async def close_session(state: AppState, request: Request, response: Response) -> None:
    cookie_value = request.cookies.get(SESSION_COOKIE)
    if cookie_value:
        await state.redis.delete(state.keys.admin_session(_digest(cookie_value)))
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)


async def current_session(request: Request) -> AdminSession | None:
    """The request's live session, or None (no cookie, expired, logged out, key revoked)."""
    cookie_value = request.cookies.get(SESSION_COOKIE)
    if not cookie_value:
        return None
    state = get_state(request)
    raw = await state.redis.hgetall(state.keys.admin_session(_digest(cookie_value)))
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        live = await run_in_threadpool(live_key, state.engine, fields["key_id"])
    except SQLAlchemyError as exc:
        raise Problem(
            503,
            "the dashboard needs the database, which is unavailable; charging goes on",
            slug="database-unavailable",
        ) from exc
    if live is None:
        return None
    return AdminSession(fields["key_id"], fields["key_prefix"], fields["csrf"])


async def page_session(request: Request) -> AdminSession:
    """Dependency of the dashboard's pages: the session, or a redirect to the login page."""
    session = await current_session(request)
    if session is None:
        raise LoginRequired()
    return session


def login_token(request: Request) -> str:
    """The login form's CSRF token: the one already in the browser's cookie, or a new one."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)


def set_login_cookie(request: Request, response: Response, token: str) -> None:
    _set_cookie(response, request, LOGIN_COOKIE, token, LOGIN_TOKEN_TTL_S)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body, size-checked; a repeated field keeps its last value."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if media_type != FORM_MEDIA_TYPE:
        raise Problem(415, f"dashboard forms are sent as {FORM_MEDIA_TYPE}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES_MAX:
            raise Problem(413, f"a dashboard form is at most {FORM_BYTES_MAX} bytes")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=64))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Problem(400, "the form body is not a valid urlencoded form") from exc


def check_token(expected: str | None, form: dict[str, str]) -> None:
    presented = form.get(CSRF_FIELD, "")
    if not expected or not presented or not hmac.compare_digest(expected, presented):
        raise Problem(403, "missing or wrong CSRF token: reload the page and submit again")


@dataclass(frozen=True)
class Posted:
    """A dashboard form submitted by a logged-in admin with the session's CSRF token."""

    session: AdminSession
    form: dict[str, str]


async def posted_form(request: Request) -> Posted:
    """Dependency of every dashboard POST but login: session, then CSRF, before any write."""
    session = await current_session(request)
    if session is None:
        raise Problem(403, "not logged in to the dashboard (or the session ended)")
    form = await read_form(request)
    check_token(session.csrf_token, form)
    return Posted(session, form)


PageSession = Annotated[AdminSession, Depends(page_session)]
PostedForm = Annotated[Posted, Depends(posted_form)]
