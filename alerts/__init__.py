"""Alert threads, escalation by roster, dispatcher commands and visit exceptions.

The engine uses :class:`AlertDesk` (docs/alerts.md); everything here is sans-I/O.

The names below are imported on first use (PEP 562), not when the package is: importing
``alerts.desk`` here imported ``alerts.threads`` too, so ``python -m alerts.threads`` (the
documented way to regenerate the lifecycle diagram) ran a module that was already in
``sys.modules`` and runpy printed a RuntimeWarning before the diagram.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.desk import AlertDesk, AlertParams, DeskSnapshot
    from alerts.records import AlertRecord, AlertVersion, Comment, ExceptionVersion, Hop
    from alerts.roster import Roster, RosterError, generate_roster, parse_roster, roster_to_toml

#: public name -> the submodule that defines it
_HOME = {
    "AlertDesk": "alerts.desk",
    "AlertParams": "alerts.desk",
    "DeskSnapshot": "alerts.desk",
    "AlertRecord": "alerts.records",
    "AlertVersion": "alerts.records",
    "Comment": "alerts.records",
    "ExceptionVersion": "alerts.records",
    "Hop": "alerts.records",
    "Roster": "alerts.roster",
    "RosterError": "alerts.roster",
    "generate_roster": "alerts.roster",
    "parse_roster": "alerts.roster",
    "roster_to_toml": "alerts.roster",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'alerts' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "AlertDesk",
    "AlertParams",
    "AlertRecord",
    "AlertVersion",
    "Comment",
    "DeskSnapshot",
    "ExceptionVersion",
    "Hop",
    "Roster",
    "RosterError",
    "generate_roster",
    "parse_roster",
    "roster_to_toml",
]
