"""The /admin dashboard over plain HTTP against a real API process: login and its cookie,
CSRF on every form, refusal of non-admin keys, tool changes and adjustments with their audit
records. The same flows in a real browser are in test_admin_browser.py."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import Engine, select

from sync.models import T_AUDIT, T_LEDGER
from tests.api.conftest import HTTP_TIMEOUT_S, account, bearer
from tests.api.server import creditmeter_bin

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (whole header kept, to read its attributes)."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def login(client: httpx.Client, key: str, **headers: str) -> httpx.Response:
    page = client.get("/admin/login", headers=headers)
    assert page.status_code == 200
    # Sent by hand: httpx keeps a Secure cookie (the https case) from plain http.
    token_cookie = set_cookies(page)["cm_admin_login"].split(";")[0]
    return client.post(
        "/admin/login",
        data={"csrf_token": csrf_of(page.text), "api_key": key},
        headers={**headers, "Cookie": token_cookie},
    )


@pytest.fixture
def browserless(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=HTTP_TIMEOUT_S) as c:
        yield c


@pytest.fixture
def admin(browserless: httpx.Client, admin_key: str) -> httpx.Client:
    assert login(browserless, admin_key).status_code == 303
    return browserless


@pytest.fixture
def tool_name(http: httpx.Client, admin_key: str) -> str:
    name = "DASH_" + uuid.uuid4().hex[:8].upper()
    r = http.put(
        f"/v1/tools/{name}",
        json={"display_name": "Dashboard test", "cost": 7, "credit_type": "credits"},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200, r.text
    return name


def audit_rows(engine: Engine, action: str, target: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_AUDIT.c.actor, T_AUDIT.c.detail).where(
                T_AUDIT.c.action == action, T_AUDIT.c.target == target
            )
        ).all()
    return [(r.actor, r.detail) for r in rows]


def key_id_of(engine: Engine, key: str) -> str:
    from sync.apikeys import PREFIX_LEN, T_API_KEYS

    with engine.connect() as conn:
        query = select(T_API_KEYS.c.id).where(T_API_KEYS.c.prefix == key[:PREFIX_LEN])
        return str(conn.execute(query).scalar_one())


def test_pages_without_a_session_redirect_to_login(browserless: httpx.Client) -> None:
    for path in ("/admin", "/admin/tools", "/admin/accounts", "/admin/sync"):
        r = browserless.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/admin/login", path


def test_admin_key_login_sets_an_httponly_strict_session_cookie(
    browserless: httpx.Client, admin_key: str
) -> None:
    r = login(browserless, admin_key)
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    cookie = set_cookies(r)["cm_admin"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
    assert "secure" not in cookie  # served over plain http here
    home = browserless.get("/admin")
    assert home.status_code == 200 and "Credits consumed per day" in home.text
    assert "default-src 'self'" in home.headers["content-security-policy"]


def test_session_cookie_is_secure_when_served_over_https(
    browserless: httpx.Client, admin_key: str
) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 (a TLS proxy in front of it).
    r = login(browserless, admin_key, **{"X-Forwarded-Proto": "https"})
    assert r.status_code == 303
    assert "secure" in set_cookies(r)["cm_admin"].lower()


@pytest.mark.parametrize("scope", ["read", "meter"])
def test_non_admin_key_is_refused(
    browserless: httpx.Client, make_key: Callable[[str], str], scope: str
) -> None:
    r = login(browserless, make_key(scope))
    assert r.status_code == 403 and "needs an admin key" in r.text
    assert "cm_admin" not in set_cookies(r)
    assert browserless.get("/admin").status_code == 303


def test_unknown_key_is_refused(browserless: httpx.Client) -> None:
    r = login(browserless, "cm_live_" + "x" * 40)
    assert r.status_code == 401 and "not a live API key" in r.text
    assert "cm_admin" not in set_cookies(r)


def test_login_without_its_csrf_token_is_403(browserless: httpx.Client, admin_key: str) -> None:
    browserless.get("/admin/login")
    r = browserless.post("/admin/login", data={"api_key": admin_key})
    assert r.status_code == 403
    assert "cm_admin" not in set_cookies(r)


def test_tool_change_without_csrf_is_403_and_changes_nothing(
    admin: httpx.Client, http: httpx.Client, read_key: str, tool_name: str
) -> None:
    for data in ({"cost": "99"}, {"cost": "99", "csrf_token": "forged"}):
        r = admin.post(f"/admin/tools/{tool_name}", data=data)
        assert r.status_code == 403, data
    assert http.get(f"/v1/tools/{tool_name}", headers=bearer(read_key)).json()["cost"] == 7


def test_tool_change_applies_to_the_next_charge_and_is_audited(
    admin: httpx.Client,
    http: httpx.Client,
    meter_key: str,
    admin_key: str,
    api_engine: Engine,
    tool_name: str,
) -> None:
    token = csrf_of(admin.get("/admin/tools").text)
    r = admin.post(f"/admin/tools/{tool_name}", data={"csrf_token": token, "cost": "3"})
    assert r.status_code == 303
    assert f"Saved {tool_name}" in admin.get(r.headers["location"]).text
    who = account("dash")
    charge = http.post(
        "/v1/charges",
        json={"account_id": who, "tool": tool_name},
        headers={**bearer(meter_key), "Idempotency-Key": account("k")},
    )
    assert charge.status_code == 402 or charge.json()["amount"] == 3, charge.text

    r = admin.post(f"/admin/tools/{tool_name}", data={"csrf_token": token, "active": "false"})
    assert r.status_code == 303
    off = http.post(
        "/v1/charges",
        json={"account_id": who, "tool": tool_name},
        headers={**bearer(meter_key), "Idempotency-Key": account("k")},
    )
    assert off.status_code == 403, off.text

    actor = key_id_of(api_engine, admin_key)
    changes = [json.loads(d) for a, d in audit_rows(api_engine, "tool.patch", tool_name)]
    assert {"cost": 3} in changes and {"active": False} in changes
    assert {a for a, _ in audit_rows(api_engine, "tool.patch", tool_name)} == {actor}


def test_bad_tool_form_shows_the_error(admin: httpx.Client, tool_name: str) -> None:
    token = csrf_of(admin.get("/admin/tools").text)
    r = admin.post(f"/admin/tools/{tool_name}", data={"csrf_token": token, "cost": "-1"})
    assert r.status_code == 422 and "cost" in r.text
    r = admin.post("/admin/tools/NO_SUCH_TOOL_X", data={"csrf_token": token, "cost": "1"})
    assert r.status_code == 404


def _funded_account_page(
    admin: httpx.Client, http: httpx.Client, admin_key: str
) -> tuple[str, str, str]:
    """A new account with 100 credits: its id, the page's CSRF token and idempotency key."""
    who = account("dash")
    r = http.post(
        f"/v1/accounts/{who}/grants",
        json={"credit_type": "credits", "amount": 100, "category": "paid"},
        headers={**bearer(admin_key), "Idempotency-Key": account("k")},
    )
    assert r.status_code == 201, r.text
    page = admin.get(f"/admin/accounts/{who}")
    assert page.status_code == 200
    idem = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert idem
    return who, csrf_of(page.text), idem.group(1)


def test_adjustment_needs_a_reason_and_lands_in_ledger_and_audit(
    admin: httpx.Client,
    http: httpx.Client,
    admin_key: str,
    api_engine: Engine,
    api_env: dict[str, str],
) -> None:
    who, token, idem = _funded_account_page(admin, http, admin_key)
    form = {"csrf_token": token, "credit_type": "credits", "amount": "-40"}

    missing_reason = admin.post(f"/admin/accounts/{who}/adjustments", data=form)
    assert missing_reason.status_code == 422 and "reason" in missing_reason.text

    form |= {"reason": "goodwill correction", "idempotency_key": idem}
    done = admin.post(f"/admin/accounts/{who}/adjustments", data=form)
    assert done.status_code == 303
    again = admin.post(f"/admin/accounts/{who}/adjustments", data=form)  # a double submit
    assert again.status_code == 303
    # No worker runs here: the API asked for a flush, waited, and says the row is pending.
    assert "pending=1" in done.headers["location"]
    pending = admin.get(done.headers["location"])
    assert "once the worker writes it" in pending.text and "goodwill correction" not in pending.text

    subprocess.run(
        [creditmeter_bin(), "worker", "--burst"], env=api_env, check=True, capture_output=True
    )
    shown = admin.get(done.headers["location"])
    assert "goodwill correction" in shown.text and "-40" in shown.text
    with api_engine.connect() as conn:
        rows = conn.execute(
            select(T_LEDGER.c.amount, T_LEDGER.c.description).where(
                T_LEDGER.c.account_id == who, T_LEDGER.c.kind == "adjustment"
            )
        ).all()
    assert [(r.amount, r.description) for r in rows] == [(-40, "goodwill correction")]
    audits = audit_rows(api_engine, "account.adjust", who)
    assert len(audits) == 1 and audits[0][0] == key_id_of(api_engine, admin_key)
    assert json.loads(audits[0][1])["reason"] == "goodwill correction"


def test_with_a_worker_running_the_adjustment_is_in_the_ledger_when_the_page_shows(
    admin: httpx.Client,
    http: httpx.Client,
    admin_key: str,
    api_engine: Engine,
    api_worker: None,
) -> None:
    who, token, idem = _funded_account_page(admin, http, admin_key)
    form = {
        "csrf_token": token,
        "credit_type": "credits",
        "amount": "25",
        "reason": "worker is up",
        "idempotency_key": idem,
    }
    done = admin.post(f"/admin/accounts/{who}/adjustments", data=form)
    assert done.status_code == 303
    assert "pending" not in done.headers["location"]
    shown = admin.get(done.headers["location"])
    assert "worker is up" in shown.text and "once the worker writes it" not in shown.text


def test_unknown_account_is_404_and_not_created(admin: httpx.Client, api_engine: Engine) -> None:
    from sync.accounts import account_exists

    who = account("never")
    assert admin.get(f"/admin/accounts/{who}").status_code == 404
    assert not account_exists(api_engine, who)


def test_account_search_finds_by_part_of_the_id(
    admin: httpx.Client, http: httpx.Client, admin_key: str
) -> None:
    who = account("findme")
    http.post(
        f"/v1/accounts/{who}/grants",
        json={"credit_type": "credits", "amount": 5, "category": "promotional"},
        headers={**bearer(admin_key), "Idempotency-Key": account("k")},
    )
    r = admin.get("/admin/accounts", params={"q": who[-12:]})
    assert r.status_code == 200 and who in r.text


def test_sync_page_shows_buckets_and_queues(admin: httpx.Client) -> None:
    r = admin.get("/admin/sync")
    assert r.status_code == 200
    assert (
        'id="buckets"' in r.text and 'id="failed-jobs"' in r.text and 'id="dead-letters"' in r.text
    )
    # Other products' Stripe events are counted apart from the failures (a count: the SQL
    # may be shared with other tests' ignored events).
    assert re.search(r'id="stripe-ignored">Ignored[^<]*<span class="n">\d+</span>', r.text)


def test_logout_ends_the_session(admin: httpx.Client, api_engine: Engine) -> None:
    cookie = admin.cookies["cm_admin"]
    token = csrf_of(admin.get("/admin").text)
    r = admin.post("/admin/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    stale = admin.get("/admin", headers={"Cookie": f"cm_admin={cookie}"})
    assert stale.status_code == 303


def test_revoking_the_key_ends_its_sessions(
    browserless: httpx.Client, make_key: Callable[[str], str], api_engine: Engine
) -> None:
    from sync.apikeys import revoke_key

    key = make_key("admin")
    assert login(browserless, key).status_code == 303
    assert browserless.get("/admin").status_code == 200
    revoke_key(api_engine, key_id_of(api_engine, key))
    assert browserless.get("/admin").status_code == 303


def test_chart_library_is_served_by_the_app(browserless: httpx.Client) -> None:
    r = browserless.get("/admin/static/vendor/chart-4.5.1.umd.min.js")
    assert r.status_code == 200 and "Chart.js v4.5.1" in r.text[:200]


def test_a_form_posted_without_a_session_is_403(browserless: httpx.Client, tool_name: str) -> None:
    r = browserless.post(f"/admin/tools/{tool_name}", data={"cost": "1", "csrf_token": "x"})
    assert r.status_code == 403


def test_repeated_failed_logins_get_429_and_a_live_key_still_logs_in(
    browserless: httpx.Client, admin_key: str
) -> None:
    # Last in the module: the failure counter (per client address) lasts its window.
    from api.auth import AUTH_FAILURES_MAX

    page = browserless.get("/admin/login")
    token_cookie = set_cookies(page)["cm_admin_login"].split(";")[0]
    form = {"csrf_token": csrf_of(page.text), "api_key": "cm_live_" + "y" * 40}
    codes = [
        browserless.post("/admin/login", data=form, headers={"Cookie": token_cookie}).status_code
        for _ in range(AUTH_FAILURES_MAX + 1)
    ]
    assert set(codes[:-1]) <= {401, 429} and codes[-1] == 429
    assert login(browserless, admin_key).status_code == 303


def test_settings_form_suspends_sets_overdraft_email_metadata_and_is_audited(
    admin: httpx.Client,
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    read_key: str,
    tool_name: str,
    api_engine: Engine,
) -> None:
    who, token, _ = _funded_account_page(admin, http, admin_key)
    url = f"/admin/accounts/{who}/settings"
    form = {
        "status": "suspended",
        "overdraft_limit": "25",
        "email": "ops@example.com",
        "metadata": '{"team": "blue"}',
    }
    assert admin.post(url, data=form).status_code == 403  # no CSRF token
    bad = admin.post(url, data={**form, "csrf_token": token, "overdraft_limit": "-1"})
    assert bad.status_code == 422 and "overdraft_limit" in bad.text
    assert 'value="-1"' in bad.text  # the admin's input is kept
    bad_json = admin.post(url, data={**form, "csrf_token": token, "metadata": "{team"})
    assert bad_json.status_code == 422 and "metadata: must be a JSON object" in bad_json.text
    unchanged = http.get(f"/v1/accounts/{who}", headers=bearer(read_key)).json()
    assert (unchanged["status"], unchanged["overdraft_limit"]) == ("active", 0)
    assert audit_rows(api_engine, "account.patch", who) == []

    done = admin.post(url, data={**form, "csrf_token": token})
    assert done.status_code == 303 and done.headers["location"].endswith("?saved=1")
    shown = admin.get(done.headers["location"]).text
    assert "<strong>suspended</strong>" in shown and "ops@example.com" in shown
    assert 'id="overdraft-limit">25<' in shown and "blue" in shown
    got = http.get(f"/v1/accounts/{who}", headers=bearer(read_key)).json()
    assert got["status"] == "suspended" and got["metadata"] == {"team": "blue"}
    listed = admin.get("/admin/accounts", params={"q": who}).text
    assert '<span class="flag">suspended</span>' in listed
    charged = http.post(
        "/v1/charges",
        json={"account_id": who, "tool": tool_name},
        headers={**bearer(meter_key), "Idempotency-Key": account("k")},
    )
    assert charged.status_code == 403 and "account-suspended" in charged.json()["type"]

    again = admin.post(url, data={**form, "csrf_token": token, "status": "active"})
    assert again.status_code == 303
    audits = audit_rows(api_engine, "account.patch", who)
    assert [json.loads(d) for _, d in audits] == [
        {
            "status": "suspended",
            "overdraft_limit": 25,
            "email": "ops@example.com",
            "metadata": {"team": "blue"},
        },
        {"status": "active"},  # only what changed
    ]
    assert {a for a, _ in audits} == {key_id_of(api_engine, admin_key)}


def test_the_account_page_shows_the_accounts_own_rate_limits(
    admin: httpx.Client, http: httpx.Client, admin_key: str
) -> None:
    who, _, _ = _funded_account_page(admin, http, admin_key)
    assert 'id="rate-limits">the catalog\'s<' in admin.get(f"/admin/accounts/{who}").text
    r = http.patch(
        f"/v1/accounts/{who}",
        json={"rate_limits": {"IMG": "600/minute", "*": "0/hour"}},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200, r.text
    shown = admin.get(f"/admin/accounts/{who}").text
    assert 'id="rate-limits"><code>*</code> 0/hour, <code>IMG</code> 600/minute<' in shown
