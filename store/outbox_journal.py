"""The outbox's local journal: records waiting for PostgreSQL during an outage, on disk.

The same file format and guarantees as the fix spool (store/spool_file.py: SQLite in WAL mode,
``synchronous=FULL``, a CRC-32 per record, torn tails discarded by SQLite): one spool record
holds one batch of outbox records as JSON lines.  Appending is durable when it returns; a
batch is deleted only after the transaction that stored it committed, and a crash between
COMMIT and delete re-drains it harmlessly (the outbox skips what it already holds:
store.outbox.StoredHistory).

Blocking calls: the writer runs them in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from store.outbox import (
    KINDS,
    JournaledCommand,
    OutboxError,
    OutboxRecord,
    canonical_json,
    command_from_json,
    command_to_json,
)

Item = OutboxRecord | JournaledCommand


def encode_items(items: Sequence[Item]) -> bytes:
    """One JSON object a line: ``{"r": kind, "id", "at", "body"}`` or ``{"c": command, ...}``."""
    lines: list[str] = []
    for it in items:
        if isinstance(it, OutboxRecord):
            obj: dict[str, Any] = {"r": it.kind, "id": it.id, "at": it.at_us, "body": it.body}
        else:
            obj = {
                "c": command_to_json(it.command),
                "at": it.at_us,
                "ok": it.accepted,
                "refusal": it.refusal,
            }
        lines.append(canonical_json(obj))
    return ("\n".join(lines)).encode()


def decode_items(body: bytes) -> list[Item]:
    """The inverse of :func:`encode_items`; raises :class:`OutboxError` on anything else."""
    out: list[Item] = []
    try:
        for line in body.decode().split("\n"):
            if not line:
                continue
            obj = json.loads(line)
            if "r" in obj:
                if obj["r"] not in KINDS:
                    raise OutboxError(f"unknown record kind {obj['r']!r}")
                at_us = int(obj["at"])
                out.append(OutboxRecord(kind=obj["r"], id=obj["id"], at_us=at_us, body=obj["body"]))
            else:
                out.append(
                    JournaledCommand(
                        at_us=int(obj["at"]),
                        command=command_from_json(obj["c"]),
                        accepted=bool(obj["ok"]),
                        refusal=obj["refusal"],
                    )
                )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise OutboxError(f"undecodable journal record: {e}") from e
    return out
