"""Alert threads, escalation by roster, dispatcher commands and visit exceptions.

The engine uses :class:`AlertDesk` (docs/alerts.md); everything here is sans-I/O.
"""

from alerts.desk import AlertDesk, AlertParams, DeskSnapshot
from alerts.records import AlertRecord, AlertVersion, Comment, ExceptionVersion, Hop
from alerts.roster import Roster, RosterError, generate_roster, parse_roster, roster_to_toml

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
