"""`creditmeter keys create|list|revoke`: API keys, shown once, stored as hashes.

`create` prints what it made, then the key alone on the last stdout line, so a script can
take it with `tail -n 1`. Nothing else ever shows the key again.

`create` and `revoke` also update the API's replica of live keys in Redis (sync/apikeys.py)
when CREDITMETER_REDIS_URL names the server, so a revocation takes effect in every API
process within its key cache's few seconds. Without that setting (the embedded Redis, which
the API process owns) or while Redis is unreachable, the API's periodic resync from SQL
applies the change within KEY_RESYNC_INTERVAL_S more.
"""

from __future__ import annotations

import typing

import typer
from rich.markup import escape
from sqlalchemy import Engine

from cli.database import schema_checked_url
from cli.tables import JsonFlag, console, print_json, print_table, table
from cli.usage import usage_error
from meter.times import rfc3339
from sync.settings import get_settings

if typing.TYPE_CHECKING:
    from sync.apikeys import ApiKeyInfo, KeyReplica

keys_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Manage API keys.")


def _fail(exc: Exception) -> typing.NoReturn:
    from cli.main import _fail as fail  # here, not at the top: cli.main imports this module

    fail(exc)
    raise SystemExit(1)  # fail exits; this line only tells type checkers so


def _engine() -> tuple[Engine, bytes]:
    """The migrated database and the service secret of the current settings."""
    from sync.db import engine_for
    from sync.secret import secret_key

    settings = get_settings()
    return engine_for(schema_checked_url(settings)), secret_key(settings)


def _replica() -> KeyReplica | None:
    """The API's key replica, when the settings name the Redis server it lives in."""
    from meter.connect import keys_from
    from meter.redis_conn import sync_client
    from sync.apikeys import KeyReplica

    settings = get_settings()
    if not settings.redis_url:
        return None
    return KeyReplica(sync_client(settings.redis_url), keys_from(settings))


def _timestamp(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(ms)


def _when(ms: int | None) -> str:
    return _timestamp(ms) or "-"


@keys_app.command()
def create(
    name: str = typer.Option(..., "--name", help="what the key is for (1-64 characters)"),
    scope: str | None = typer.Option(
        None, "--scope", help="required: read, meter (implies read) or admin (all)"
    ),
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    from sync.apikeys import SCOPES, create_key

    # Checked here, not by click: its missing-option error is a multi-line box, and a bad
    # scope found later would exit 1; both are the same mistake, so both exit 2 in one line.
    if scope not in SCOPES:
        given = "is required" if scope is None else f"is {scope!r}"
        usage_error("--scope", f"{given}; give one of {', '.join(SCOPES)}")
    try:
        engine, secret = _engine()
        created = create_key(engine, secret, name=name, scope=scope, replica=_replica())
    except Exception as exc:
        _fail(exc)
    out = console()
    out.print(f"created key {created.id} ({escape(created.name)}), scope {created.scope}")
    out.print("store it now: it is shown only this once")
    # Plain print: rich could wrap or style it, and the last line must be the bare key.
    print(created.plaintext, flush=True)


@keys_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """List every key (never the key itself: its prefix)."""
    from sync.apikeys import list_keys

    try:
        engine, _ = _engine()
        infos = list_keys(engine)
    except Exception as exc:
        _fail(exc)
    if as_json:
        print_json({"data": [_key_json(k) for k in infos]})
        return
    if not infos:
        console().print("no API keys yet: creditmeter keys create --name NAME --scope SCOPE")
        return
    rows = table("id", "name", "prefix", "scope", "created", "last used", "revoked")
    for k in infos:
        rows.add_row(
            k.id,
            escape(k.name),
            k.prefix,
            k.scope,
            _when(k.created_at_ms),
            _when(k.last_used_at_ms),
            _when(k.revoked_at_ms),
        )
    print_table(rows)


def _key_json(k: ApiKeyInfo) -> dict[str, object]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scope": k.scope,
        "created_at": _timestamp(k.created_at_ms),
        "last_used_at": _timestamp(k.last_used_at_ms),
        "revoked_at": _timestamp(k.revoked_at_ms),
    }


@keys_app.command()
def revoke(
    key: str = typer.Argument(..., metavar="KEY_ID_OR_PREFIX", help="the id or prefix"),
) -> None:
    """Revoke a key: running API processes refuse it within seconds."""
    from sync.apikeys import revoke_key

    try:
        engine, _ = _engine()
        info = revoke_key(engine, key, replica=_replica())
    except Exception as exc:
        _fail(exc)
    when = _when(info.revoked_at_ms)
    console().print(f"revoked key {info.id} ({escape(info.name)}, {info.prefix}) at {when}")
