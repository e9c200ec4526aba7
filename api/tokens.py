"""Account tokens: short-lived bearer tokens that read one account's balance and events.

A backend with a `meter` key asks `POST /v1/accounts/{id}/tokens` for a token and hands it to
that account's browser, which reads `/balance` and subscribes to `/events` (EventSource, with
`?token=`). Nothing is stored: a token is

    cmt_<base64url(JSON {"a": account_id, "e": expires_at_ms})>.<base64url(HMAC-SHA256)>

signed with a key derived from CREDITMETER_SECRET_KEY (derived, so a token signature can
never be confused with an API-key hash made from the same secret). The `cmt_` marker tells
a token from an API key (`cm_live_`). A token cannot be revoked; it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Final

from meter import validate
from meter.times import now_ms as wall_ms

TOKEN_MARKER: Final = "cmt_"
TOKEN_TTL_S_DEFAULT: Final = 900  # 15 min: a page refreshes it; a leaked one reads briefly.
TOKEN_TTL_S_MAX: Final = 86_400  # A day at most: tokens cannot be revoked, only expire.
TOKEN_LEN_MAX: Final = 512  # A 128-char account, expiry and signature encode to < 300.
_SIGNING_CONTEXT: Final = b"creditmeter/account-token/v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret_key: bytes, body: str) -> str:
    signing_key = hmac.new(secret_key, _SIGNING_CONTEXT, hashlib.sha256).digest()
    return _b64(hmac.new(signing_key, body.encode(), hashlib.sha256).digest())


def is_token(presented: str) -> bool:
    """Whether a bearer credential is meant as an account token (not whether it is valid)."""
    return presented.startswith(TOKEN_MARKER)


def issue_token(
    secret_key: bytes,
    account_id: str,
    ttl_s: int = TOKEN_TTL_S_DEFAULT,
    *,
    now_ms: int | None = None,
) -> tuple[str, int]:
    """(token, expires_at_ms). Raises InvalidArgument (HTTP 422) for a bad account id or a
    ttl outside [1, TOKEN_TTL_S_MAX]."""
    validate.account_id(account_id)
    validate.integer("ttl_seconds", ttl_s, 1, TOKEN_TTL_S_MAX)
    expires_at_ms = (wall_ms() if now_ms is None else now_ms) + ttl_s * 1000
    claims = json.dumps({"a": account_id, "e": expires_at_ms}, separators=(",", ":"))
    body = TOKEN_MARKER + _b64(claims.encode())
    return f"{body}.{_signature(secret_key, body)}", expires_at_ms


def verify_token(secret_key: bytes, token: str, now_ms: int) -> str | None:
    """The account a token reads, or None when it is malformed, forged or expired.

    The signature is compared in constant time before the claims are even decoded.
    """
    if len(token) > TOKEN_LEN_MAX or not token.startswith(TOKEN_MARKER):
        return None
    body, dot, signature = token.rpartition(".")
    if not dot:
        return None
    if not hmac.compare_digest(signature.encode(), _signature(secret_key, body).encode()):
        return None
    try:
        claims = json.loads(_unb64(body[len(TOKEN_MARKER) :]))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None  # Only a holder of the secret could sign this: still, never a 500.
    if not isinstance(claims, dict):
        return None
    account, expires_at_ms = claims.get("a"), claims.get("e")
    if not isinstance(account, str) or not validate.ACCOUNT_RE.fullmatch(account):
        return None
    if type(expires_at_ms) is not int or expires_at_ms <= now_ms:
        return None
    return account
