"""The alert thread: one per stop or vehicle condition, its lifecycle as a transition table.

Theory.  A *thread* is the one alert about one *subject*: a planned stop (``stop/<date>/<site>``)
or a vehicle condition on a day (``vehicle/<date>/<vehicle>/<condition>``).  Its id is derived
from the subject only, so the same data gives the same ids on every run and after a restart.
Everything that happens to the subject happens to that thread: at risk → late → missed raise
its severity (``WORSEN``), a visit or a cancellation ends it (``CLEAR``), late data that proves
it wrong retracts it (``RETRACT``), a dispatcher acknowledges or comments it, and escalation
re-routes it (``HOP``).  A resolved or retracted thread comes back only with a new alarming fact
(``FACT``/``WORSEN`` from ``RESOLVED``/``RETRACTED``: "reopened"), never by itself.

An acknowledgement covers the severity the dispatcher saw: when the thread worsens after it, the
thread is open again and needs a new one (and its escalation clock starts again).  Escalation
hops only an ``OPEN`` thread: there is no ``(ACKNOWLEDGED, HOP)`` entry, so an acknowledged
thread cannot be re-routed even by a stale timer — the table raises.

Every transition here is in :data:`TRANSITIONS`; anything else raises :class:`IllegalTransition`
(a bug of ours: the desk checks commands before it steps).  :func:`mermaid_diagram` renders the
table; docs/alerts.md carries its output and a test checks the two agree.
"""

from __future__ import annotations

import enum


class ThreadStatus(enum.Enum):
    NEW = "new"  # no thread yet (only a pseudo-state for the table)
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    RETRACTED = "retracted"


class ThreadInput(enum.Enum):
    FACT = "fact"  # an alarming fact at the same (or a lower) severity, or a first one
    WORSEN = "worsen"  # an alarming fact at a higher severity
    ACKNOWLEDGE = "acknowledge"
    COMMENT = "comment"
    HOP = "hop"  # escalation timer fired
    CLEAR = "clear"  # the problem went away
    RETRACT = "retract"  # later data proved the alert wrong


class IllegalTransition(RuntimeError):
    """The desk asked a thread for a transition the lifecycle does not have (our bug)."""


S, In = ThreadStatus, ThreadInput

TRANSITIONS: dict[tuple[ThreadStatus, ThreadInput], ThreadStatus] = {
    (S.NEW, In.FACT): S.OPEN,
    (S.NEW, In.WORSEN): S.OPEN,
    (S.OPEN, In.FACT): S.OPEN,
    (S.OPEN, In.WORSEN): S.OPEN,
    (S.OPEN, In.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.OPEN, In.COMMENT): S.OPEN,
    (S.OPEN, In.HOP): S.OPEN,
    (S.OPEN, In.CLEAR): S.RESOLVED,
    (S.OPEN, In.RETRACT): S.RETRACTED,
    (S.ACKNOWLEDGED, In.FACT): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, In.WORSEN): S.OPEN,
    (S.ACKNOWLEDGED, In.COMMENT): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, In.CLEAR): S.RESOLVED,
    (S.ACKNOWLEDGED, In.RETRACT): S.RETRACTED,
    (S.RESOLVED, In.FACT): S.OPEN,
    (S.RESOLVED, In.WORSEN): S.OPEN,
    (S.RESOLVED, In.COMMENT): S.RESOLVED,
    (S.RETRACTED, In.FACT): S.OPEN,
    (S.RETRACTED, In.WORSEN): S.OPEN,
    (S.RETRACTED, In.COMMENT): S.RETRACTED,
}

#: Statuses in which a thread still wants a human (counted in snapshots and loads).
ACTIVE = frozenset({S.OPEN, S.ACKNOWLEDGED})


def step(status: ThreadStatus, inp: ThreadInput) -> ThreadStatus:
    try:
        return TRANSITIONS[(status, inp)]
    except KeyError:
        raise IllegalTransition(
            f"alert thread: no transition from {status.value} on {inp.value}"
        ) from None


def allowed(status: ThreadStatus, inp: ThreadInput) -> bool:
    return (status, inp) in TRANSITIONS


def mermaid_diagram() -> str:
    """The lifecycle as a Mermaid state diagram, generated from :data:`TRANSITIONS` (self
    loops grouped per state so the picture stays readable)."""
    lines = ["stateDiagram-v2"]
    edges: dict[tuple[ThreadStatus, ThreadStatus], list[str]] = {}
    for (src, inp), dst in TRANSITIONS.items():
        edges.setdefault((src, dst), []).append(inp.value)
    for (src, dst), inputs in edges.items():
        a = "[*]" if src is S.NEW else src.value
        lines.append(f"    {a} --> {dst.value}: {', '.join(inputs)}")
    return "\n".join(lines) + "\n"


def stable_stop_alert_id(stop_id: str) -> str:
    return f"stop/{stop_id}"


def stable_vehicle_alert_id(service_date: str, vehicle_id: str, kind: str) -> str:
    return f"vehicle/{service_date}/{vehicle_id}/{kind}"


if __name__ == "__main__":  # pragma: no cover - a helper for regenerating docs/alerts.md
    print(mermaid_diagram(), end="")
