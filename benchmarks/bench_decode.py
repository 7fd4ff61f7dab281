"""Decode throughput: fleetwatch's batch decoder vs pynmea2 and vs a per-line parser.

    python benchmarks/bench_decode.py [--repeats 7] [--batch 5000] [--real-tracks DIR]

Inputs: (1) a synthetic 1 Hz stream, 1,000 units, one RMC+GGA pair per MQTT payload (what the
fleet sends), decoded in batches of ``--batch`` payloads; (2) the two real receiver logs in
../shared/data/real-tracks (mixed sentence types, proprietary, void fixes), one payload per
receiver cycle (``--real-chunking 12``: per 12 lines, as before issue 11).  Every contender
parses the same sentences:

* fleetwatch ``Decoder.decode`` (compiled batch parse + epochs + per-unit filter: the full job);
* pynmea2 ``parse`` on every line (parse only: no checksum-less handling, no validation);
* fleetwatch ``decode_reference`` (the plain per-line Python parser, same full job).

Reports sentences/s as the median of the repeats, and the ratios, plus the machine's load
average and the cost of the first decode call in a fresh interpreter (numba loads or compiles
the parse kernel then).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pynmea2
from _args import positive_int

from core.fixes import datetime_to_us
from ingest.nmea import DecodeOptions, Decoder, decode_reference
from simulators.synthetic import FleetShape, SyntheticFleet

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-tracks"
Batch = tuple[list[str], list[bytes], npt.NDArray[np.int64]]


def synthetic(n_units: int, seconds: int, batch: int) -> tuple[list[Batch], int]:
    """The project's synthetic fleet (simulators.synthetic): every unit once a second."""
    fleet = SyntheticFleet(FleetShape(units=n_units, unit_prefix="u", seed=7))
    everyone = np.arange(n_units, dtype=np.int64)
    names = [fleet.shape.unit_id(u) for u in range(n_units)]
    t0 = datetime_to_us(dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC))
    units, payloads, recv = [], [], []
    for s in range(seconds):
        units += names
        payloads += fleet.payloads(everyone, t0 + s * 1_000_000)
        recv += [t0 + s * 1_000_000 + 400_000] * n_units
    batches = [
        (units[i : i + batch], payloads[i : i + batch], np.array(recv[i : i + batch]))
        for i in range(0, len(units), batch)
    ]
    return batches, 2 * len(payloads)


_TIMED = re.compile(rb"^\$[A-Z0-9]{2}(RMC|GGA|GNS|GLL),")


def cycles(lines: list[bytes]) -> list[bytes]:
    """One payload per receiver cycle, as a unit publishes it: cut before a time-bearing
    sentence whose time differs from the cycle's (GLL has its time in field 5)."""
    out: list[bytes] = []
    cur: list[bytes] = []
    key: bytes | None = None
    for ln in lines:
        m = _TIMED.match(ln)
        if m is not None:
            f = ln.split(b",")
            k = f[5] if m.group(1) == b"GLL" and len(f) > 5 else f[1]
            if key is not None and k != key and cur:
                out.append(b"\r\n".join(cur))
                cur = []
            key = k
        cur.append(ln)
    if cur:
        out.append(b"\r\n".join(cur))
    return out


def real_logs(folder: Path, chunking: str = "cycle") -> tuple[list[Batch], int]:
    batches: list[Batch] = []
    n = 0
    paths = sorted(folder.glob("*.nmea"))
    if not paths:
        raise SystemExit(f"no *.nmea logs in {folder}: pass --real-tracks DIR")
    for path in paths:
        lines = [ln for ln in path.read_bytes().splitlines() if ln.startswith(b"$")]
        n += len(lines)
        if chunking == "cycle":
            payloads = cycles(lines)
        else:
            payloads = [b"\r\n".join(lines[i : i + 12]) for i in range(0, len(lines), 12)]
        recv = datetime_to_us(dt.datetime(2010, 4, 12, tzinfo=dt.UTC))
        batches.append(([path.stem] * len(payloads), payloads, np.full(len(payloads), recv)))
    return batches, n


def median_rate(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    """Median sentences/s over the repeats: (per CPU second of this process, per wall second).

    The CPU-time rate is the per-core figure: on a shared, loaded machine the wall clock also
    counts the time other processes held the core."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(n / max(time.process_time() - c0, 1e-9))
        wall.append(n / (time.perf_counter() - w0))
    return statistics.median(cpu), statistics.median(wall)


def run(name: str, batches: list[Batch], n: int, options: DecodeOptions, repeats: int) -> None:
    lines = [ln for _, ps, _ in batches for p in ps for ln in p.splitlines() if ln]

    def ours() -> None:
        d = Decoder(options)
        for b in batches:
            d.decode(*b)

    def reference() -> None:
        for b in batches:
            decode_reference(*b, options)

    def pynmea() -> None:
        for ln in lines:
            with contextlib.suppress(pynmea2.ParseError):
                pynmea2.parse(ln.decode("ascii", "replace"), check=True)

    ours()  # warm-up
    (c_ours, w_ours), (c_py, w_py), (c_ref, w_ref) = (
        median_rate(ours, n, repeats),
        median_rate(pynmea, n, repeats),
        median_rate(reference, n, max(3, repeats // 2)),
    )
    print(f"\n{name}: {n:,} sentences; median of {repeats} runs, sentences/s")
    print(f"  {'':34s} {'per CPU-second':>15s} {'per wall-second':>16s}")
    print(f"  {'fleetwatch Decoder (compiled)':34s} {c_ours:>15,.0f} {w_ours:>16,.0f}")
    print(f"  {'pynmea2.parse per line':34s} {c_py:>15,.0f} {w_py:>16,.0f}")
    print(f"  {'decode_reference (per-line)':34s} {c_ref:>15,.0f} {w_ref:>16,.0f}")
    print(
        f"  ratio vs pynmea2: {c_ours / c_py:.1f}x (CPU), {w_ours / w_py:.1f}x (wall); "
        f"vs per-line reference: {c_ours / c_ref:.1f}x (CPU), {w_ours / w_ref:.1f}x (wall)"
    )


def first_call_s() -> float:
    """Wall seconds of the first ``Decoder.decode`` in a fresh interpreter (kernel cache as is)."""
    code = (
        "import time; from ingest.nmea import Decoder; from ingest.nmea_encode import frame;"
        "t = time.perf_counter(); Decoder().decode(['u'], [frame('GPGGA,123519,4807.038,N,"
        "01131.000,E,1,08,0.9,545.4,M,46.9,M,,')], [0]); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--batch", type=positive_int, default=5000, help="payloads per decode call")
    ap.add_argument(
        "--seconds", type=positive_int, default=30, help="seconds of the synthetic stream"
    )
    ap.add_argument(
        "--real-tracks", type=Path, default=REAL,
        help="folder of the real receiver logs, *.nmea (default: ../shared/data/real-tracks "
        f"beside the repository, here {REAL})",
    )  # fmt: skip
    ap.add_argument(
        "--real-chunking", choices=("cycle", "12"), default="cycle",
        help="real logs: one payload per receiver cycle (as units publish; default) or per 12 "
        "lines (the bench before issue 11: splits epochs, so GGA/GLL become duplicates)",
    )  # fmt: skip
    args = ap.parse_args()
    if not sorted(args.real_tracks.glob("*.nmea")):  # said after minutes of synthetic runs before
        ap.error(f"no *.nmea logs in {args.real_tracks}: pass --real-tracks DIR (the real "
                 "receiver logs of ../shared/data/real-tracks)")  # fmt: skip
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")  # fmt: skip
    print(f"first decode call in a fresh interpreter: {first_call_s():.2f} s (numba cache: "
          f"{os.environ.get('NUMBA_CACHE_DIR', 'default')})")  # fmt: skip
    batches, n = synthetic(1000, args.seconds, args.batch)
    run(f"synthetic 1 Hz RMC+GGA, 1,000 units, {args.batch} payloads/batch", batches, n,
        DecodeOptions(), args.repeats)  # fmt: skip
    batches, n = real_logs(args.real_tracks, args.real_chunking)
    what = "one receiver cycle" if args.real_chunking == "cycle" else "12 lines"
    run(f"real logs (Munich + Regensburg), {what} per payload, one batch per file", batches, n,
        DecodeOptions(max_age_days=3650.0), args.repeats)  # fmt: skip
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
