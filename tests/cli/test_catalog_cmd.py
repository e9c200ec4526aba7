"""`creditmeter catalog apply FILE` over real SQL and Redis: applies, then is idempotent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from sync import pricing
from sync.db import engine_for
from sync.models import T_AUDIT
from sync.settings import get_settings
from sync.tools import get_tool

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.toml"


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, sql_url: str, key_prefix: str, tmp_path: Path
):
    monkeypatch.setenv("CREDITMETER_REDIS_URL", redis_url)
    monkeypatch.setenv("CREDITMETER_DATABASE_URL", sql_url)
    monkeypatch.setenv("CREDITMETER_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("CREDITMETER_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_apply_then_apply_again_changes_nothing(env: None, tmp_path: Path, sql_url: str):
    name = "CAT_" + uuid.uuid4().hex[:8].upper()
    path = tmp_path / "catalog.toml"
    path.write_text(
        f'[[tools]]\nname = "{name}"\ndisplay_name = "x"\ncost = 4\ncredit_type = "credits"\n'
    )
    first = runner.invoke(app, ["catalog", "apply", str(path)])
    assert first.exit_code == 0, first.output
    assert name in first.output
    tool = get_tool(engine_for(sql_url), name)
    assert tool is not None and tool.cost == 4
    again = runner.invoke(app, ["catalog", "apply", str(path)])
    assert again.exit_code == 0 and "up to date" in again.output


def test_bad_file_is_one_line_and_exit_1(env: None, tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('[[tools]]\nname = "X"\ncost = "4"\ncredit_type = "credits"\n')
    r = runner.invoke(app, ["catalog", "apply", str(path)])
    assert r.exit_code == 1
    assert "cost" in r.output and len(r.output.strip().splitlines()) == 1


def test_the_example_catalog_applies_then_reports_no_changes(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Its own SQL: the example's welcome grant would reach every account other tests create,
    # and its packs and plans would switch off theirs.
    own_sql = f"sqlite:///{tmp_path / 'example.db'}"
    monkeypatch.setenv("CREDITMETER_DATABASE_URL", own_sql)
    get_settings.cache_clear()
    migrated = runner.invoke(app, ["migrate"])  # a new SQLite file: only migrate creates it
    assert migrated.exit_code == 0, migrated.output
    first = runner.invoke(app, ["catalog", "apply", str(EXAMPLE)])
    assert first.exit_code == 0, first.output
    lines = first.output.strip().splitlines()
    assert "pack credits-small: added, 50 credits for 500 usd, active" in lines
    assert "pack credits-large: added, 100 credits for 900 usd, active" in lines
    assert any(line.startswith("prices credits: added, graduated, minimum 10") for line in lines)
    assert any(line.startswith("prices video_seconds: added, volume, minimum 60") for line in lines)
    assert any(line.startswith("plan pro: added, price_pro_monthly") for line in lines)
    engine = engine_for(own_sql)
    assert pricing.quote(engine, "credits", 1000, plan_id="pro").amount == 7999
    again = runner.invoke(app, ["catalog", "apply", str(EXAMPLE)])
    assert again.exit_code == 0, again.output
    assert again.output.strip() == f"{EXAMPLE}: up to date"
    with engine.connect() as conn:
        audited = conn.execute(select(T_AUDIT).where(T_AUDIT.c.action == "catalog.apply")).all()
    assert len(audited) == 1  # the second apply changed nothing, so audited nothing
