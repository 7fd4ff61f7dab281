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
