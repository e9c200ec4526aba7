"""The wheel built from this tree holds everything the code reads at run time: every package
(each folder with an __init__.py and all its modules), the Lua scripts and includes (package
meter.lua, mapped from lua/), Alembic's env and migrations, the dashboard's templates and
static files, and the `creditmeter` command. .ci/wheel_check.sh then runs the installed wheel.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
# Folders with an __init__.py that are not part of the product: the suite itself, and the
# example app (a sample to copy, and `examples` would be one more generic import name).
NOT_SHIPPED = ("tests", "examples")
# lua/ is the package meter.lua in an installed tree (pyproject.toml: package-dir).
RENAMED = {"lua": "meter/lua"}
BUILD_TIMEOUT_S = 300  # pip fetches setuptools for an isolated build on a cold cache

pytestmark = [pytest.mark.slow, pytest.mark.standalone, pytest.mark.timeout(BUILD_TIMEOUT_S)]


def _tree_files() -> list[PurePosixPath]:
    """Files git knows (tracked, or new and not ignored): what a fresh clone builds from."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [PurePosixPath(name) for name in out.split("\0") if name and (REPO / name).is_file()]


def _installed_path(path: PurePosixPath) -> str:
    head, *rest = path.parts
    return str(PurePosixPath(RENAMED.get(head, head), *rest))


@pytest.fixture(scope="module")
def tree() -> list[PurePosixPath]:
    return _tree_files()


@pytest.fixture(scope="module")
def wheel(tree: list[PurePosixPath], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the tree, so no stale build/ of the working tree leaks in."""
    base = tmp_path_factory.mktemp("wheel")
    archive = base / "src.tar"
    with tarfile.open(archive, "w") as tar:
        for path in tree:
            tar.add(REPO / path, arcname=str(path))
    source = base / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    dist = base / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "-w", str(dist), str(source)],
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    (built,) = dist.glob("creditmeter-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _missing(wanted: list[PurePosixPath], names: set[str]) -> list[str]:
    return sorted(_installed_path(p) for p in wanted if _installed_path(p) not in names)


def test_every_package_and_module_is_in_the_wheel(
    tree: list[PurePosixPath], wheel_names: set[str]
) -> None:
    packages = {p.parent for p in tree if p.name == "__init__.py"}
    shipped = {p for p in packages if p.parts[0] not in NOT_SHIPPED}
    modules = [p for p in tree if p.suffix == ".py" and p.parent in shipped]
    assert _missing(modules, wheel_names) == []
    assert {"meter", "lua", "sync", "worker", "api", "cli", "bench"} <= {
        p.parts[0] for p in shipped
    }


def test_every_lua_script_and_include_is_in_the_wheel(
    tree: list[PurePosixPath], wheel_names: set[str]
) -> None:
    lua = [p for p in tree if p.parts[0] == "lua" and p.suffix == ".lua"]
    assert any(p.parts[1] == "includes" for p in lua)
    assert _missing(lua, wheel_names) == []


def test_alembic_env_and_every_migration_are_in_the_wheel(
    tree: list[PurePosixPath], wheel_names: set[str]
) -> None:
    migrations = [p for p in tree if p.parts[:2] == ("sync", "migrations")]
    assert any(p.parts[2] == "versions" for p in migrations if len(p.parts) > 3)
    assert _missing(migrations, wheel_names) == []


def test_templates_and_static_files_are_in_the_wheel(
    tree: list[PurePosixPath], wheel_names: set[str]
) -> None:
    assets = [p for p in tree if p.parts[:2] in {("api", "templates"), ("api", "static")}]
    assert assets
    assert _missing(assets, wheel_names) == []


def test_the_benchmark_load_script_is_in_the_wheel(wheel_names: set[str]) -> None:
    """`creditmeter bench` imports bench, whose HTTP row drives wrk with this script."""
    assert "bench/wrk_charge.lua" in wheel_names


def test_the_wheel_installs_the_creditmeter_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(name).decode()
    assert "creditmeter = cli.main:app" in entry_points.splitlines()
