"""Decode NMEA 0183 text (a FILE or stdin) into JSON fixes, one object per line on stdout.

A JSON summary of rejects by reason and skipped sentences by type goes to stderr; the exit
status is 0 even when sentences were rejected (a garbled log is data, not an error).

Lines starting with ``#`` are comments, except ``#recv <ISO-8601>``: the receive time of the
sentences after it (the simulator writes one before each MQTT payload).  For sentences without
a ``#recv`` line the receive time is ``--recv-time``: an ISO-8601 time, ``now``, or ``auto``
(default), the latest *dated* fix time found in the input itself.  An archive log has no receive
time; ``auto`` makes its own fixes neither "future" nor "too old", and a fix with a time of day
only (GGA, GNS, GLL) is dated by the unit's own RMC/ZDA dates around it or rejected ``undated``:
never by the wall clock.  See docs/nmea.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from fleetwatch.cli_types import positive_float

if TYPE_CHECKING:  # imported where used: `fleetwatch decode --help` must not load numba
    from ingest.nmea import DecodeOptions, DecodeResult

#: DecodeOptions' defaults, for --help without importing the decoder (a test keeps them equal)
DEFAULT_MAX_SPEED_KMH = 250.0
DEFAULT_MAX_AGE_DAYS = 30.0
DEFAULT_WEEK_ROLLOVER = "correct"

#: Inputs larger than this are refused (read whole: ``auto`` needs two passes).
MAX_INPUT_BYTES = 1 << 30
#: Without ``#recv`` lines, the input is cut into payloads of about this size, at epoch bounds.
CHUNK_BYTES = 64 * 1024
#: Payloads handed to the decoder per call.
BATCH_PAYLOADS = 2000
#: A position sentence with a time of day; GLL has its time in field 5, the others in field 1.
#: Searched anywhere in a line: binary bytes (u-blox UBX frames) may precede the ``$``.
_TIMED = re.compile(rb"\$[A-Z0-9]{2}(RMC|GGA|GNS|GLL),")


class InputError(Exception):
    """The input cannot be read or a ``#recv`` line is not a time (the user's to fix)."""


@dataclass(frozen=True, slots=True)
class Payload:
    recv_us: int | None  # None: no ``#recv`` line before it
    data: bytes


def parse_iso(text: str) -> int:
    """ISO-8601 -> µs; a time without zone is refused (fleetwatch never guesses a zone)."""
    from core.fixes import datetime_to_us

    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{text!r} is not an ISO-8601 time (e.g. 2026-11-23T05:12:31Z)") from exc
    if t.tzinfo is None:
        raise InputError(f"{text!r} has no time zone; add Z or +00:00")
    return datetime_to_us(t)


def _epoch_key(line: bytes) -> bytes | None:
    """The time field of a time-bearing sentence line (a cheap look, not a parse)."""
    m = _TIMED.search(line)
    if m is None:
        return None
    fields = line[m.start() :].split(b",", 7)
    i = 5 if m.group(1) == b"GLL" else 1
    return fields[i].split(b"*")[0] if len(fields) > i + 1 else None


def split_payloads(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Payload]:
    """Lines -> payloads: a ``#recv`` line opens one; otherwise chunks of ~``chunk_bytes``
    cut only where the fix time changes, so that RMC and GGA of one epoch stay together."""
    recv: int | None = None
    cur: list[bytes] = []
    size = 0
    last_key: bytes | None = None
    for line in data.splitlines(keepends=True):
        if line.startswith(b"#"):
            if line.startswith(b"#recv "):
                if cur:
                    yield Payload(recv, b"".join(cur))
                cur, size, last_key = [], 0, None
                recv = parse_iso(line[6:].decode("ascii", "replace"))
            continue
        key = _epoch_key(line)
        if size >= chunk_bytes and key is not None and key != last_key:
            yield Payload(recv, b"".join(cur))
            cur, size = [], 0
        if key is not None:
            last_key = key
        cur.append(line)
        size += len(line)
    if cur:
        yield Payload(recv, b"".join(cur))


def decode_payloads(
    payloads: list[Payload], unit: str, default_recv_us: int, options: DecodeOptions
) -> Iterator[DecodeResult]:
    """The payloads through one decoder, ``BATCH_PAYLOADS`` a call (so a time-only fix finds
    the RMC/ZDA dates around it in the same call on all but very long inputs)."""
    import numpy as np

    from ingest.nmea import Decoder

    decoder = Decoder(options)
    for i in range(0, len(payloads), BATCH_PAYLOADS):
        part = payloads[i : i + BATCH_PAYLOADS]
        recv = np.array(
            [default_recv_us if p.recv_us is None else p.recv_us for p in part], dtype=np.int64
        )
        yield decoder.decode([unit] * len(part), [p.data for p in part], recv)


def latest_fix_time(payloads: list[Payload], unit: str, now_us: int) -> int | None:
    """``auto``: the latest *dated* fix time of the input (a date of its own, or of its unit's
    RMC/ZDA around it), decoded with the time bounds opened.  A time-only fix without a date
    around it is rejected there, not dated by ``now_us``: the wall clock never dates a fix."""
    from ingest.nmea import DecodeOptions

    lenient = DecodeOptions(
        require_checksum=False,
        max_future_s=1e12,
        max_age_days=1e6,
        week_rollover="reject",
        date_from_receive_time=False,
    )
    latest: int | None = None
    for r in decode_payloads(payloads, unit, now_us, lenient):
        if len(r.fixes):
            m = int(r.fixes.t_us.max())
            latest = m if latest is None else max(latest, m)
    return latest


EPILOG = """\
examples:
  fleetwatch decode track.nmea > fixes.jsonl
  cat track.nmea | fleetwatch decode - --unit U0001 --recv-time now
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("file", nargs="?", type=Path,
                        help="NMEA text; '-' or none: stdin")  # fmt: skip
    parser.add_argument("--unit", help="unit id of the fixes (default: the file's stem)")
    parser.add_argument(
        "--recv-time",
        default="auto",
        help="receive time for sentences without a #recv line: ISO-8601, 'now' or 'auto' "
        "(default: the input's latest fix time)",
    )
    parser.add_argument(
        "--no-checksum-required",
        action="store_true",
        help="accept sentences without *hh (a receiver that sends none)",
    )
    parser.add_argument(
        "--max-speed-kmh", type=positive_float, default=DEFAULT_MAX_SPEED_KMH, metavar="KMH",
        help=f"a fix implying a faster move is refused (default {DEFAULT_MAX_SPEED_KMH:g})",
    )  # fmt: skip
    parser.add_argument(
        "--max-age-days", type=positive_float, default=DEFAULT_MAX_AGE_DAYS, metavar="DAYS",
        help="fixes older than this before the receive time are refused "
        f"(default {DEFAULT_MAX_AGE_DAYS:g})",
    )  # fmt: skip
    parser.add_argument(
        "--week-rollover", choices=("correct", "reject"), default=DEFAULT_WEEK_ROLLOVER,
        help="GPS week-rollover dates: correct them when plausible, or reject them "
        f"(default {DEFAULT_WEEK_ROLLOVER})",
    )  # fmt: skip
    parser.add_argument(
        "--show-rejects", action="store_true", help="also print each reject as JSON on stderr"
    )


def _looks_like_gpx(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith(b"<?xml") or b"<gpx" in head


def _read(path: Path | None, stdin: BinaryIO) -> bytes:
    if path is not None and str(path) == "-":
        path = None
    try:
        if path is None:
            data = stdin.read(MAX_INPUT_BYTES + 1)
        else:
            with path.open("rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path or 'stdin'}: {exc.strerror or exc}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"input larger than {MAX_INPUT_BYTES} bytes; split it")
    return data


def run(
    args: argparse.Namespace,
    *,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    now_us: int | None = None,
) -> int:
    from core.fixes import datetime_to_us, iso_utc
    from ingest.nmea import DecodeOptions

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    from_file = args.file is not None and str(args.file) != "-"
    try:
        data = _read(args.file, stdin or sys.stdin.buffer)
        if _looks_like_gpx(data):
            raise InputError(
                f"{args.file if from_file else 'stdin'} is GPX (XML), not NMEA 0183 text; "
                "convert it first, e.g. gpsbabel -i gpx -f track.gpx -o nmea -F track.nmea"
            )
        payloads = list(split_payloads(data))
        unit = args.unit or (args.file.stem if from_file else "stdin")
        now = now_us if now_us is not None else datetime_to_us(dt.datetime.now(dt.UTC))
        source = "argument"
        # Only a real receive time dates a time-only fix: #recv lines, --recv-time now or a
        # given time; ``auto`` is the log's own latest fix, so it dates nothing (undated).
        real_recv = True
        if args.recv_time == "now":
            recv, source = now, "now"
        elif args.recv_time == "auto":
            latest = None
            if any(p.recv_us is None for p in payloads):
                real_recv = False
                latest = latest_fix_time(payloads, unit, now)
            recv, source = (latest, "auto:latest-fix") if latest is not None else (now, "auto:now")
        else:
            recv = parse_iso(args.recv_time)
        options = DecodeOptions(
            require_checksum=not args.no_checksum_required,
            max_speed_kmh=args.max_speed_kmh,
            max_age_days=args.max_age_days,
            week_rollover=args.week_rollover,
            date_from_receive_time=real_recv,
        )
    except (InputError, ValueError) as exc:
        print(f"fleetwatch decode: {exc}", file=err)
        return 2
    totals: dict[str, int] = {}
    try:
        _emit(payloads, unit, recv, options, args.show_rejects, out, err, totals)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of ours; silence the final flush.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    summary = {
        "unit": unit,
        "recv_time": iso_utc(recv),
        "recv_time_source": source,
        "sentences": totals.get("sentences", 0),
        "accepted": totals.get("accepted", 0),
        "merged": totals.get("merged", 0),
        "dating": totals.get("dating", 0),
        "rejects": {k[7:]: v for k, v in sorted(totals.items()) if k.startswith("reject:")},
        "skipped": {k[8:]: v for k, v in sorted(totals.items()) if k.startswith("skipped:")},
        "notes": {
            k: v
            for k, v in sorted(totals.items())
            if not k.startswith(("reject:", "skipped:"))
            and k not in ("sentences", "accepted", "merged", "dating")
        },
    }
    err.write(json.dumps(summary) + "\n")
    return 0


def _emit(
    payloads: list[Payload],
    unit: str,
    recv: int,
    options: DecodeOptions,
    show_rejects: bool,
    out: TextIO,
    err: TextIO,
    totals: dict[str, int],
) -> None:
    for r in decode_payloads(payloads, unit, recv, options):
        lines = [json.dumps(f.to_json_dict()) + "\n" for f in r.fixes.to_fixes()]
        out.write("".join(lines))
        for k, v in r.counts.items():
            totals[k] = totals.get(k, 0) + v
        if show_rejects:
            for rej in r.rejects:
                err.write(
                    json.dumps(
                        {
                            "reject": rej.reason.value,
                            "detail": rej.detail,
                            "sentence": rej.sentence.decode("ascii", "backslashreplace"),
                        }
                    )
                    + "\n"
                )
    out.flush()
