"""RFC 9457 problem+json: the one place errors become HTTP answers.

Routes raise `Problem` (or let a meter error through); the handlers registered by
`install` turn every error, validation errors and unknown routes included, into
`application/problem+json` with `type`, `title`, `status`, `detail` and extension fields.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from meter import errors as me

log = logging.getLogger("creditmeter.api")

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:creditmeter:problem:"  # a URN: stable, and no promise of a web page

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    500: "internal-error",
    502: "bad-gateway",
    503: "service-unavailable",
}


# Redis refusing writes (maxmemory reached, policy noeviction) lasts until an operator frees
# memory or raises the limit: a client should not retry at once, nor give up.
REDIS_FULL_RETRY_AFTER_S = 5
REDIS_DOWN_RETRY_AFTER_S = 1  # a restart or failover: back within seconds
SQL_DOWN_RETRY_AFTER_S = 5
CLOCK_RETRY_AFTER_S = 60  # a host clock is fixed by NTP or a person, not within seconds

_NOT_FOUND_IDS = {"hold_id": "hold-not-found", "charge_id": "charge-not-found"}


class Problem(Exception):
    """An HTTP error answer. `extensions` become top-level members of the problem object."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or _HTTP_SLUGS.get(status, "error")
        self.title = title or self.slug.replace("-", " ").capitalize()
        self.headers = headers or {}
        self.extensions = extensions

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }


def invalid(
    field: str,
    message: str,
    *,
    detail: str | None = None,
    kind: str = "value",
    slug: str | None = None,
    **extensions: Any,
) -> Problem:
    """The one shape of a 422 about one field: `errors` names it (as pydantic's do)."""
    return Problem(
        422,
        detail or message,
        slug=slug,
        errors=[{"field": field, "message": message, "type": kind}],
        **extensions,
    )


def problem_response(p: Problem) -> JSONResponse:
    return JSONResponse(p.body(), status_code=p.status, headers=p.headers, media_type=MEDIA_TYPE)


def from_meter_error(exc: me.MeterError) -> Problem:
    """The HTTP answer to each meter error (SPEC §7 status codes)."""
    if isinstance(exc, me.InsufficientCredits):
        return Problem(
            402,
            str(exc),
            slug="insufficient-credits",
            balance=exc.balance,
            available=exc.available,
            required=exc.required,
            credit_type=exc.credit_type,
        )
    if isinstance(exc, me.RateLimited):
        return Problem(
            429,
            str(exc),
            slug="rate-limited",
            headers={
                "Retry-After": str(_ceil_s(exc.retry_after_ms)),
                **rate_limit_headers(exc.limit, 0, exc.reset_ms),
            },
            tool=exc.tool,
            limit=exc.limit,
        )
    if isinstance(exc, me.ToolDisabled):
        return Problem(403, str(exc), slug="tool-disabled", tool=exc.tool)
    if isinstance(exc, me.AccountSuspended):
        return Problem(403, str(exc), slug="account-suspended", account_id=exc.account_id)
    if isinstance(exc, me.UnknownTool):
        return Problem(404, str(exc), slug="unknown-tool", tool=exc.tool)
    if isinstance(exc, me.HoldNotFound):
        return Problem(404, str(exc), slug="hold-not-found", hold_id=exc.hold_id)
    if isinstance(exc, me.ChargeNotFound):
        return Problem(404, str(exc), slug="charge-not-found", charge_id=exc.charge_id)
    if isinstance(exc, me.HoldNotActive):
        return Problem(409, str(exc), slug="hold-not-active", hold_status=exc.status)
    if isinstance(exc, me.OverRefund):
        return Problem(409, str(exc), slug="over-refund", refundable=exc.refundable)
    if isinstance(exc, me.GrantExists):
        return Problem(409, str(exc), slug="grant-exists")
    if isinstance(exc, me.LimitExceeded):
        return Problem(409, str(exc), slug="limit-exceeded")
    if isinstance(exc, me.IdempotencyConflict):
        return Problem(422, str(exc), slug="idempotency-key-reused")
    if isinstance(exc, me.InvalidArgument) and exc.field in _NOT_FOUND_IDS:
        # An id this deployment never made (its bucket does not decode) names nothing: 404.
        slug = _NOT_FOUND_IDS[exc.field]
        return Problem(404, str(exc), slug=slug)
    if isinstance(exc, me.InvalidArgument):
        return invalid(exc.field, str(exc))
    if isinstance(exc, me.AmountOverflow):
        return Problem(422, str(exc), slug="amount-overflow")
    if isinstance(exc, me.ClockSkew):
        log.error("%s", exc)  # the host's clock needs fixing: every write is refused
        return Problem(
            503, str(exc), slug="clock-skew", headers={"Retry-After": str(CLOCK_RETRY_AFTER_S)}
        )
    log.error("meter error without an HTTP mapping: %r", exc)
    return Problem(503, "the meter cannot answer this request now", slug="meter-unavailable")


def rate_limit_headers(limit: int, remaining: int, reset_ms: int) -> dict[str, str]:
    """IETF draft-ietf-httpapi-ratelimit-headers (the -07 field names), on a 429 and on every
    charge a rate limit counted: reset is the seconds until the whole limit is back."""
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(-(-reset_ms // 1000)),
    }


def _ceil_s(ms: int) -> int:
    """Whole seconds for a header, rounded up: a client that waits that long is let through."""
    return max(1, -(-ms // 1000))


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside an exception group (a task group re-raises it wrapped)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def outage_problem(exc: BaseException) -> Problem | None:
    """The 503 for an error of a store we depend on (logged as one line), or None."""
    exc = _unwrap(exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        log.warning("redis out of memory: %s", exc)
        return Problem(
            503,
            "the balance store is out of memory; nothing was changed",
            slug="redis-out-of-memory",
            headers={"Retry-After": str(REDIS_FULL_RETRY_AFTER_S)},
        )
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        log.warning("redis unavailable: %s", type(exc).__name__)
        return Problem(
            503,
            "balance store unavailable",
            slug="redis-unavailable",
            headers={"Retry-After": str(REDIS_DOWN_RETRY_AFTER_S)},
        )
    if isinstance(exc, OperationalError):
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return Problem(
            503,
            "database unavailable",
            slug="database-unavailable",
            headers={"Retry-After": str(SQL_DOWN_RETRY_AFTER_S)},
        )
    return None


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"field": ".".join(loc), "message": e.get("msg", ""), "type": e.get("type", "")})
    return out


def install(app: FastAPI) -> None:
    """Registers the handlers that make every error a problem+json answer."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(me.MeterError)
    async def _meter(request: Request, exc: me.MeterError) -> JSONResponse:
        return problem_response(from_meter_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(Problem(422, detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            Problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        )

    @app.exception_handler(redis.exceptions.OutOfMemoryError)
    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    @app.exception_handler(OperationalError)
    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        problem = outage_problem(exc)
        assert problem is not None  # registered for exactly the classes it maps
        return problem_response(problem)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # An outage that escaped the handlers above (raised in a middleware, or wrapped in
        # an exception group) is still a 503.
        problem = outage_problem(exc)
        if problem is not None:
            return problem_response(problem)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal error"))
