"""deploy/: the alert rules and the dashboard name only metrics that exist; the systemd unit and
the Containerfile run what the docs say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "fleetwatch-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "fleetwatch-dashboard.json"


def service_registry() -> CollectorRegistry:
    """Every collector the service registers on its web shell's registry (fleetwatch.service)."""
    from fleetwatch.broker_watch import BrokerMetrics
    from fleetwatch.engine_metrics import EngineMetrics
    from fleetwatch.health import Health, PipelineReading
    from fleetwatch.web import WebShell
    from ingest.metrics import IngestMetrics, SourceCounters

    shell = WebShell()
    metrics = IngestMetrics(shell.registry)
    metrics.watch_source(
        lambda: SourceCounters(
            received=0, acked=0, reconnects=0, stale_acks=0, connected=True, buffered=0
        )
    )
    EngineMetrics(shell.registry)
    BrokerMetrics(shell.registry)

    async def probe() -> None:
        return None

    Health(
        read=lambda: PipelineReading(
            writer_store_up=True, broker_connected=True, unacked_messages=0, last_commit_age_s=None
        ),
        probe=probe,
        registry=shell.registry,
    )
    return shell.registry


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose, labelled families included."""
    names: set[str] = set()
    for family in registry.collect():
        base = family.name
        if family.type == "counter":
            names |= {base + "_total", base + "_created"}
        elif family.type == "histogram":
            names |= {base + "_bucket", base + "_count", base + "_sum", base + "_created"}
        else:
            names.add(base)
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bfleetwatch_[a-z0-9_]+", expr))


def alert_exprs() -> list[str]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in data["panels"] for t in panel.get("targets", [])]


def test_the_check_itself_can_fail() -> None:
    assert "fleetwatch_no_such_metric_total" not in exposed_names(service_registry())
    assert "fleetwatch_ingest_fixes_inserted_total" in exposed_names(service_registry())


@pytest.mark.parametrize(
    ("what", "exprs"), [("alerts", alert_exprs), ("dashboard", dashboard_exprs)]
)
def test_every_metric_named_exists(what: str, exprs: object) -> None:
    exposed = exposed_names(service_registry())
    named = set().union(*(metric_names(e) for e in exprs()))  # type: ignore[operator]
    assert named, what
    assert named - exposed == set(), f"{what} name metrics that do not exist"


def test_alerts_cover_the_failure_states_of_issue_12() -> None:
    data = yaml.safe_load(ALERTS.read_text())
    rules = {r["alert"]: r for g in data["groups"] for r in g["rules"]}
    for alert in ("FleetwatchStoreDown", "FleetwatchBrokerDroppingMessages", "FleetwatchCommitLag",
                  "FleetwatchEngineBehind", "FleetwatchDataDelayed"):  # fmt: skip
        assert alert in rules
        assert rules[alert]["annotations"]["description"]


def test_dashboard_panels_have_unique_ids_and_queries() -> None:
    data = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] for p in data["panels"])


def test_the_systemd_unit_and_container_run_the_documented_command() -> None:
    unit = (DEPLOY / "systemd" / "fleetwatch.service").read_text()
    assert re.search(r"^ExecStart=\S*fleetwatch run --wait-for \d+$", unit, re.M)
    assert "RestartPreventExitStatus=2" in unit  # bad settings are not retried
    assert "EnvironmentFile=" in unit
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    from fleetwatch.config import Settings

    assert timeout > Settings().shutdown_timeout_s
    containerfile = (DEPLOY / "container" / "Containerfile").read_text()
    assert 'ENTRYPOINT ["fleetwatch"]' in containerfile
    assert "/healthz" in containerfile
    for package in ("core", "ingest", "geofence", "schedule", "alerts", "ws", "store",
                    "simulators", "fleetwatch"):  # fmt: skip
        assert f"COPY {package} {package}" in containerfile, package
