"""The lifecycle of a planned stop, as one transition table (h11's ``_state.py`` habit).

Theory.  A planned stop is a promise: *site S is served on date D inside window [ws, we]*.  Its
state is a function of three kinds of facts, and the table below is the only place that says
how the state moves when one of them arrives:

* **time** (a fix or a clock tick moves "now"): the ETA passes ``we − margin`` (``eta_late``)
  or comes back (``eta_ok``); the window ends (``window_end``); the grace ends (``grace_end``);
* **visits** (detection): a live visit to the site by *any* vehicle (``visit``) — or the
  retraction of the visit that served it (``visit_gone``: late data proved it wrong);
* **the dispatcher**: ``cancel`` (client closed, with a reason).

States only move forward (``pending/at_risk`` → ``late`` → ``visited | missed``) except by
*retraction*: late, buffered fixes that show a visit turn ``missed`` into ``visited``
(``visit`` on ``missed``), and a retracted visit turns ``visited`` back into ``pending``, from
where the time inputs are replayed at once (``window_end``, ``grace_end``) to reach the state
the facts now justify.  ``at_risk`` → ``pending`` is not backwards: both are "open, not late",
and the ETA recovered.  ``cancelled`` is final; a visit to a cancelled site changes nothing.

Each entry maps ``(state, input)`` to ``(next state, action)``; the board performs the action.
A pair not in the table is a bug of the caller and raises :class:`IllegalStopTransition`.
:func:`diagram` renders the table as the Mermaid diagram in docs/schedule.md (a test checks
that the page holds exactly the generated text).
"""

from __future__ import annotations

from typing import Final, Literal

from schedule.stop_events import StopState

StopInput = Literal[
    "eta_late", "eta_ok", "window_end", "grace_end", "visit", "visit_gone", "cancel"
]
#: ``emit``: a new state, tell the world; ``update``: same state, new facts (an earlier arrival
#: from late data); ``retract``: an earlier terminal decision is reversed; ``ignore``: nothing
#: changes; ``refuse``: a command that cannot apply (the board raises CommandRefused).
StopAction = Literal["emit", "update", "retract", "ignore", "refuse"]


class IllegalStopTransition(RuntimeError):
    """The board asked for a (state, input) pair the table does not hold: a bug of ours."""


STATES: Final[tuple[StopState, ...]] = (
    "pending",
    "at_risk",
    "late",
    "visited",
    "missed",
    "cancelled",
)
INPUTS: Final[tuple[StopInput, ...]] = (
    "eta_late",
    "eta_ok",
    "window_end",
    "grace_end",
    "visit",
    "visit_gone",
    "cancel",
)
TERMINAL: Final[frozenset[StopState]] = frozenset({"visited", "missed", "cancelled"})
#: forward order; pending and at_risk share a rank (open, not yet late)
RANK: Final[dict[StopState, int]] = {
    "pending": 0,
    "at_risk": 0,
    "late": 1,
    "visited": 2,
    "missed": 2,
    "cancelled": 2,
}

TRANSITIONS: Final[dict[tuple[StopState, StopInput], tuple[StopState, StopAction]]] = {
    # open, not late
    ("pending", "eta_late"): ("at_risk", "emit"),
    ("pending", "eta_ok"): ("pending", "ignore"),
    ("pending", "window_end"): ("late", "emit"),
    ("pending", "visit"): ("visited", "emit"),
    ("pending", "cancel"): ("cancelled", "emit"),
    ("at_risk", "eta_late"): ("at_risk", "ignore"),
    ("at_risk", "eta_ok"): ("pending", "emit"),
    ("at_risk", "window_end"): ("late", "emit"),
    ("at_risk", "visit"): ("visited", "emit"),
    ("at_risk", "cancel"): ("cancelled", "emit"),
    # window over, not arrived
    ("late", "eta_late"): ("late", "ignore"),
    ("late", "eta_ok"): ("late", "ignore"),
    ("late", "grace_end"): ("missed", "emit"),
    ("late", "visit"): ("visited", "emit"),
    ("late", "cancel"): ("cancelled", "emit"),
    # terminal
    ("visited", "eta_late"): ("visited", "ignore"),
    ("visited", "eta_ok"): ("visited", "ignore"),
    ("visited", "window_end"): ("visited", "ignore"),
    ("visited", "grace_end"): ("visited", "ignore"),
    ("visited", "visit"): ("visited", "update"),
    ("visited", "visit_gone"): ("pending", "retract"),
    ("visited", "cancel"): ("visited", "refuse"),
    ("missed", "eta_late"): ("missed", "ignore"),
    ("missed", "eta_ok"): ("missed", "ignore"),
    ("missed", "grace_end"): ("missed", "ignore"),
    ("missed", "visit"): ("visited", "retract"),
    ("missed", "cancel"): ("missed", "refuse"),
    ("cancelled", "eta_late"): ("cancelled", "ignore"),
    ("cancelled", "eta_ok"): ("cancelled", "ignore"),
    ("cancelled", "window_end"): ("cancelled", "ignore"),
    ("cancelled", "grace_end"): ("cancelled", "ignore"),
    ("cancelled", "visit"): ("cancelled", "ignore"),
    ("cancelled", "visit_gone"): ("cancelled", "ignore"),
    ("cancelled", "cancel"): ("cancelled", "refuse"),
}


def transition(state: StopState, event: StopInput) -> tuple[StopState, StopAction]:
    """The table's answer; raises for a pair it does not hold."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalStopTransition(
            f"no transition from stop state {state!r} on {event!r}"
        ) from None


def diagram() -> str:
    """A Mermaid state diagram of every transition that changes the state (generated)."""
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> pending: import"]
    for (state, event), (nxt, action) in TRANSITIONS.items():
        if action in ("ignore", "refuse") or nxt == state:
            continue
        label = f"{event} (retraction)" if action == "retract" else event
        lines.append(f"    {state} --> {nxt}: {label}")
    lines.append("```")
    return "\n".join(lines) + "\n"
