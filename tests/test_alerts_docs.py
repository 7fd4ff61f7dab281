"""docs/alerts.md carries the lifecycle diagram generated from the transition table, and
docs/formats.md documents exactly the fields an exception's JSON has."""

from __future__ import annotations

import re
from pathlib import Path

from alerts.records import ExceptionVersion
from alerts.threads import TRANSITIONS, ThreadInput, ThreadStatus, mermaid_diagram

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_lifecycle_diagram_in_docs_is_generated_from_the_table() -> None:
    text = (DOCS / "alerts.md").read_text(encoding="utf-8")
    block = re.search(
        r"<!-- BEGIN GENERATED: alerts.threads.mermaid_diagram -->\n```mermaid\n(.*?)```\n"
        r"<!-- END GENERATED -->",
        text,
        re.S,
    )
    assert block, "docs/alerts.md lost its generated diagram block"
    assert block.group(1) == mermaid_diagram(), (
        "docs/alerts.md is out of date: paste the output of `python -m alerts.threads`"
    )


def test_diagram_shows_every_transition() -> None:
    diagram = mermaid_diagram()
    for (src, inp), dst in TRANSITIONS.items():
        a = "[*]" if src is ThreadStatus.NEW else src.value
        line = next(
            ln for ln in diagram.splitlines() if ln.strip().startswith(f"{a} --> {dst.value}:")
        )
        assert inp.value in line.split(":", 1)[1].split(", ") or inp.value in line


def test_no_hop_from_acknowledged_and_final_states_only_reopen_on_facts() -> None:
    assert (ThreadStatus.ACKNOWLEDGED, ThreadInput.HOP) not in TRANSITIONS
    for final in (ThreadStatus.RESOLVED, ThreadStatus.RETRACTED):
        leaving = {
            inp for (src, inp), dst in TRANSITIONS.items() if src is final and dst is not final
        }
        assert leaving == {ThreadInput.FACT, ThreadInput.WORSEN}


def test_formats_documents_every_exception_field() -> None:
    text = (DOCS / "formats.md").read_text(encoding="utf-8")
    section = text.split("## Visit exceptions", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    x = ExceptionVersion(
        id="d/s/late", version=1, kind="late", status="open", site_id="s", client_id=None,
        service_date="2026-11-23", vehicle_id=None, window_start_us=0, window_end_us=0,
        arrival_us=None, minutes_late=None, comments=(), at_us=0,
    )  # fmt: skip
    assert documented == set(x.to_json_dict())


def test_alerts_doc_lists_every_alert_json_key() -> None:
    from alerts.desk import AlertDesk
    from tests.alerts_helpers import roster, stop, utc

    text = (DOCS / "alerts.md").read_text(encoding="utf-8")
    section = text.split("## Alert JSON", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    (a,) = AlertDesk(roster=roster()).consume([stop(state="late")], utc("09:00"))
    assert documented == set(a.to_json_dict())
    facts = set(a.to_json_dict()["facts"])
    assert all(f"`{k}`" in section for k in facts)
