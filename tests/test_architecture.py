"""The flow's direction is a rule of the codebase, checked here rather than hoped for.

Each stage may import only the stages upstream of it (design.md: one direction, no
back-and-forth); nothing imports the wiring package ``fleetwatch``; the simulators stand outside
the flow (they play the GPS units) and nothing in the flow imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> packages of ours it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "ingest": {"core"},
    "geofence": {"core"},
    "schedule": {"core", "geofence"},
    "alerts": {"core", "geofence", "schedule"},
    "ws": {"core", "geofence", "schedule", "alerts"},
    "store": {"core", "geofence", "schedule", "alerts"},
    "simulators": {"core", "ingest", "geofence"},
    "fleetwatch": {"core", "ingest", "geofence", "schedule", "alerts", "ws", "store", "simulators"},
}
OURS = set(ALLOWED)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_flow(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for dep in sorted(_imports(path) - {package} - ALLOWED[package]):
            bad.append(f"{path.relative_to(ROOT)} imports {dep}")
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


# -- the logic is sans-I/O ----------------------------------------------------------------------

#: Modules whose import means I/O (sockets, event loops, databases, brokers, HTTP, processes,
#: threads).  The logic packages take values and ``now`` and return values and events.
IO_MODULES = frozenset(
    {
        "socket", "ssl", "select", "selectors", "asyncio", "anyio", "trio", "threading",
        "multiprocessing", "concurrent", "subprocess", "signal", "sqlite3", "http", "urllib",
        "psycopg", "psycopg_pool", "websockets", "paho", "aiomqtt", "gmqtt", "amqtt", "fastapi",
        "starlette", "uvicorn", "httpx", "requests", "aiohttp", "prometheus_client", "stamina",
        "time",
    }
)  # fmt: skip
#: The logic: every module of these packages, plus the sans-I/O parts of ingest.
LOGIC_PACKAGES = ("core", "geofence", "schedule", "alerts")
LOGIC_MODULES = (
    "ingest/nmea",
    "ingest/batcher.py",
    "ingest/nmea_encode.py",
    "ingest/mqtt/protocol.py",
)
#: Logic modules allowed to read a file, because loading that file is their point; each keeps
#: the parsing in a pure function over text and reads the file in a thin wrapper.
FILE_LOADERS = frozenset({"geofence/sites.py", "schedule/plans.py", "alerts/roster.py"})
_FILE_CALLS = frozenset({"read_text", "read_bytes", "write_text", "write_bytes"})


def io_violations(root: Path, rel_paths: list[str]) -> list[str]:
    """Every I/O import and every file access outside the loaders, as 'path: what'."""
    bad: list[str] = []
    for rel in rel_paths:
        path = root / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            name = f.relative_to(root).as_posix()
            tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
            for node in ast.walk(tree):
                mods: list[str] = []
                if isinstance(node, ast.Import):
                    mods = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                for mod in mods:
                    if mod.split(".")[0] in IO_MODULES:
                        bad.append(f"{name}:{node.lineno}: imports {mod}")
                if name in FILE_LOADERS or not isinstance(node, ast.Call):
                    continue
                fn = node.func
                if isinstance(fn, ast.Name) and fn.id == "open":
                    bad.append(f"{name}:{node.lineno}: calls open()")
                elif isinstance(fn, ast.Attribute) and fn.attr in _FILE_CALLS:
                    bad.append(f"{name}:{node.lineno}: calls .{fn.attr}()")
    return bad


def test_the_logic_does_no_io() -> None:
    bad = io_violations(ROOT, [*LOGIC_PACKAGES, *LOGIC_MODULES])
    assert not bad, "I/O in the sans-I/O logic:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source",
    [
        "import socket\n",
        "import asyncio\n",
        "from psycopg import AsyncConnection\n",
        "import websockets.asyncio.server\n",
        "from paho.mqtt import client\n",
        "import time\nnow = time.time()\n",
        "data = open('x').read()\n",
        "from pathlib import Path\ntext = Path('x').read_text()\n",
    ],
)
def test_the_io_check_fails_when_io_is_added(tmp_path: Path, source: str) -> None:
    """The rule above can fail: a logic module that does any of these is reported."""
    pkg = tmp_path / "schedule"
    pkg.mkdir()
    (pkg / "clean.py").write_text("import math\nx = math.pi\n")
    (pkg / "leaky.py").write_text(source)
    bad = io_violations(tmp_path, ["schedule"])
    assert bad
    assert all(b.startswith("schedule/leaky.py:") for b in bad)


def test_the_readme_names_the_modules_that_do_io() -> None:
    """README's list of I/O modules is true: each listed place exists and every package that
    is not logic is on it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(ln for ln in readme.splitlines() if ln.startswith("Only ") and "do I/O" in ln)
    named = {tok.strip("`,. ") for tok in line.split() if tok.startswith("`")}
    for place in named:
        assert (ROOT / place).exists(), f"README names {place}, which does not exist"
    for shell in ("ingest/mqtt/source.py", "ingest/service.py", "store/", "fleetwatch/"):
        assert shell in named, f"README's I/O list misses {shell}"
