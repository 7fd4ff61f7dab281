"""The regression corpus of real-receiver classes (issue 11), generated from ground truth.

Each file in ``tests/data/nmea/`` is one receiver's archive log, written by :func:`build` from
a deterministic track and a *profile*: which sentences the receiver sends per epoch, in what
order, with which talker, length and noise (binary frames, proprietary lines, void epochs).
Beside each ``NAME.nmea`` is ``NAME.truth.json``: the epochs for which the receiver sent a valid
position (time, latitude, longitude), and the epochs it sent but that cannot be dated.

    python -m tests.nmea_corpus write             # regenerate the files (deterministic)
    python -m tests.nmea_corpus measure [--tree DIR]   # recovery / wrong / invented per file

``measure`` runs ``fleetwatch decode`` (default ``--recv-time auto``: archive logs) of the tree
given (default: this one) in a subprocess, so the same corpus scores another checkout (e.g. main
before this work) with the same script.  Scoring: a decoded fix *recovers* a truth epoch when
its time is equal and its position within 1e-6 degrees; a fix at a truth time with another
position is *wrong*; a fix at no truth time is *invented* (e.g. a time-only fix dated by the
wall clock).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.fixes import Fix, datetime_to_us, iso_utc
from ingest.nmea_encode import (
    encode_gga,
    encode_gll,
    encode_gns,
    encode_rmc,
    encode_vtg,
    encode_zda,
    frame,
)

DATA = Path(__file__).resolve().parent / "data" / "nmea"
S = 1_000_000
#: Position tolerance of a "recovered" fix: the encoded minutes have >= 5 decimals (< 2e-7 deg).
POSITION_TOLERANCE_DEG = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class Epoch:
    t_us: int
    lat: float
    lon: float
    speed_kmh: float
    course: float
    valid: bool  # the receiver has a fix (else it sends void sentences)


def track(start: dt.datetime, n: int, seed: int, *, step_s: int = 1) -> list[Epoch]:
    """A vehicle: drives (8-14 m/s with turns), stops for a while, drives on; ~2 % void."""
    rng = np.random.default_rng(seed)
    t0 = datetime_to_us(start.replace(tzinfo=dt.UTC))
    lat, lon = 48.0 + rng.random(), 11.0 + rng.random()
    heading = rng.uniform(0, 360)
    out = []
    void_left = 0
    for i in range(n):
        stopped = n // 3 <= i < n // 3 + n // 10
        v = 0.0 if stopped else float(rng.uniform(8, 14))
        heading = (heading + rng.normal(0, 4)) % 360
        d = v * step_s
        lat += d * math.cos(math.radians(heading)) / 111_195.0
        lon += d * math.sin(math.radians(heading)) / (111_195.0 * math.cos(math.radians(lat)))
        if void_left == 0 and rng.random() < 0.004:
            void_left = int(rng.integers(2, 8))
        valid = void_left == 0
        void_left = max(0, void_left - 1)
        out.append(
            Epoch(
                t_us=t0 + i * step_s * S, lat=round(lat, 7), lon=round(lon, 7),
                speed_kmh=v * 3.6, course=heading, valid=valid,
            )
        )  # fmt: skip
    return out


def _fix(e: Epoch, talker: str, quality: int = 1) -> Fix:
    return Fix(
        unit_id="u", t_us=e.t_us, recv_us=e.t_us, lat=e.lat, lon=e.lon,
        speed_kmh=e.speed_kmh, course=e.course, quality=quality, sats=9, hdop=0.8,
        alt_m=412.5, talker=talker,
    )  # fmt: skip


def _hms(t_us: int) -> str:
    t = dt.datetime.fromtimestamp(t_us / 1e6, dt.UTC)
    return t.strftime("%H%M%S.00")


def _dmy(t_us: int) -> str:
    return dt.datetime.fromtimestamp(t_us / 1e6, dt.UTC).strftime("%d%m%y")


def void_rmc(e: Epoch, talker: str) -> bytes:
    return frame(f"{talker}RMC,{_hms(e.t_us)},V,,,,,,,{_dmy(e.t_us)},,,N")


def void_gga(e: Epoch, talker: str) -> bytes:
    return frame(f"{talker}GGA,{_hms(e.t_us)},,,,,0,00,99.9,,M,,M,,")


def gsa(talker: str = "GP") -> bytes:
    return frame(f"{talker}GSA,A,3,05,08,15,18,26,27,28,,,,,,2.0,1.0,1.5")


def psrf(rng: np.random.Generator) -> bytes:
    """A SiRF status line of 96-97 characters (a real unit's shape, invented values)."""
    vals = ",".join(f"{int(x):05d}" for x in rng.integers(0, 99999, 12))
    body = f"PSRFEPE,{vals},{int(rng.integers(10, 99))}.{int(rng.integers(0, 9))}"
    return frame(body[: 92 + int(rng.integers(0, 2))])


def ubx(rng: np.random.Generator) -> bytes:
    """A u-blox UBX frame (sync 0xB5 0x62, class, id, length, payload, checksum): binary, and
    its payload may hold any byte, '$', CR and LF included."""
    payload = rng.integers(0, 256, int(rng.integers(8, 40)), dtype=np.uint8).tobytes()
    if rng.random() < 0.5:
        payload = payload[:3] + b"$GP" + payload[3:]
    head = b"\x01\x07" + len(payload).to_bytes(2, "little")
    ck_a = ck_b = 0
    for b in head + payload:
        ck_a = (ck_a + b) & 0xFF
        ck_b = (ck_b + ck_a) & 0xFF
    return b"\xb5\x62" + head + payload + bytes((ck_a, ck_b))


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


Profile = Callable[[list[Epoch], np.random.Generator], tuple[bytes, list[Epoch], list[Epoch]]]


def _lines(parts: list[bytes]) -> bytes:
    return b"".join(parts)


def p_gga_before_rmc(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """GGA before RMC in each epoch; the first 30 epochs GGA only (no date yet): the old
    decoder dated them by the wall clock and then refused the whole log as too old."""
    out: list[bytes] = []
    for i, e in enumerate(ep):
        if not e.valid:
            out += [void_gga(e, "GP")] + ([void_rmc(e, "GP")] if i >= 30 else [])
            continue
        out += [encode_gga(_fix(e, "GP"), decimals=5), gsa()]
        if i >= 30:
            out.append(encode_rmc(_fix(e, "GP"), decimals=5))
    return (_lines(out),)


def p_zda_gga(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """GGA (+ VTG) every epoch, ZDA every 10th: ZDA is the only date."""
    out: list[bytes] = []
    for i, e in enumerate(ep):
        if i % 10 == 3:
            out.append(encode_zda(e.t_us))
        if not e.valid:
            out.append(void_gga(e, "GP"))
            continue
        out += [encode_gga(_fix(e, "GP"), decimals=5), encode_vtg(_fix(e, "GP"))]
    return (_lines(out),)


def p_gns_gll_zda(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """A u-blox-like GN receiver with GNS, GLL and ZDA (no RMC); every other epoch GLL only."""
    out: list[bytes] = []
    for i, e in enumerate(ep):
        out.append(encode_zda(e.t_us, talker="GN"))
        if not e.valid:
            out.append(frame(f"GNGLL,,,,,{_hms(e.t_us)},V,N"))
            continue
        f = _fix(e, "GN")
        out += ([encode_gns(f, decimals=5)] if i % 2 else []) + [encode_gll(f, decimals=5)]
    return (_lines(out),)


def p_in_talker(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """Integrated navigation: INRMC + INGGA + INGLL, IIHDG heading, EC talker now and then."""
    out: list[bytes] = []
    for i, e in enumerate(ep):
        talker = "EC" if i % 50 == 7 else "IN"
        if not e.valid:
            out.append(void_rmc(e, talker))
            continue
        f = _fix(e, talker)
        out += [
            encode_rmc(f, decimals=5), encode_gga(f, decimals=5), encode_gll(f, decimals=5),
            frame("IIHDG,212.6,,,1.6,E"),
        ]  # fmt: skip
    return (_lines(out),)


def p_rtk_long(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """An RTK receiver: 8-10 decimals of minutes, 4-decimal heights, differential age and
    station id: 85-110-character RMC/GGA/GNS."""
    out: list[bytes] = []
    for e in ep:
        if not e.valid:
            out += [void_rmc(e, "GN"), void_gga(e, "GN")]
            continue
        f = _fix(e, "GN", quality=4)
        dec = int(rng.integers(8, 11))
        out += [encode_rmc(f, decimals=dec), encode_gga(f, decimals=dec, rtk=True)]
    return (_lines(out),)


def p_sirf(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """A SiRF unit: 96-97-character $PSRF status lines between RMC and GGA."""
    out: list[bytes] = []
    for e in ep:
        out += [psrf(rng), psrf(rng)]
        if not e.valid:
            out += [void_rmc(e, "GP"), void_gga(e, "GP")]
            continue
        f = _fix(e, "GP")
        out += [encode_rmc(f, decimals=5), psrf(rng), encode_gga(f, decimals=5)]
    return (_lines(out),)


def p_ubx(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """u-blox with UBX and NMEA on one port: a binary frame directly before many '$'."""
    out: list[bytes] = []
    for e in ep:
        pre = ubx(rng) if rng.random() < 0.7 else b""
        if not e.valid:
            out += [pre + void_rmc(e, "GN")]
            continue
        f = _fix(e, "GN")
        pre2 = ubx(rng) if rng.random() < 0.5 else b""
        out += [pre + encode_rmc(f, decimals=5), pre2 + encode_gga(f, decimals=5)]
    return (_lines(out),)


def p_undated(ep: list[Epoch], rng: np.random.Generator) -> tuple[bytes, ...]:
    """GNS only and no date anywhere: nothing can be dated, nothing may be invented."""
    return (_lines([encode_gns(_fix(e, "GN"), decimals=5) for e in ep if e.valid]),)


#: name -> (profile, start, epochs, seed, datable): ``datable`` False = no fix of the file can
#: be dated (its valid epochs are listed as ``undatable`` in the truth file, never "recovered").
#: (Start times are UTC.)
CORPUS: dict[str, tuple[Callable[..., tuple[bytes, ...]], dt.datetime, int, int, bool]] = {
    "gga_before_rmc_2011": (p_gga_before_rmc, _utc(2011, 6, 14, 7, 59, 50), 400, 1, True),
    "zda_gga_only_2014": (p_zda_gga, _utc(2014, 3, 2, 23, 58, 0), 400, 2, True),
    "gns_gll_zda_2016": (p_gns_gll_zda, _utc(2016, 12, 31, 23, 57, 0), 400, 3, True),
    "in_talker_2019": (p_in_talker, _utc(2019, 9, 9, 12, 0, 0), 400, 4, True),
    "rtk_long_2021": (p_rtk_long, _utc(2021, 5, 5, 5, 5, 0), 400, 5, True),
    "sirf_psrf_2008": (p_sirf, _utc(2008, 2, 29, 15, 0, 0), 300, 6, True),
    "ubx_interleaved_2020": (p_ubx, _utc(2020, 1, 1, 0, 0, 0), 400, 7, True),
    "gns_only_undated": (p_undated, _utc(2017, 7, 7, 7, 0, 0), 200, 8, False),
}  # fmt: skip


def build(name: str) -> tuple[bytes, dict[str, list[list[object]]]]:
    profile, start, n, seed, datable = CORPUS[name]
    ep = track(start, n, seed)
    (data,) = profile(ep, np.random.default_rng(seed + 100))
    rows = [[iso_utc(e.t_us), e.lat, e.lon] for e in ep if e.valid]
    return data, {"valid": rows if datable else [], "undatable": [] if datable else rows}


def write() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name in CORPUS:
        data, truth = build(name)
        (DATA / f"{name}.nmea").write_bytes(data)
        (DATA / f"{name}.truth.json").write_text(json.dumps(truth, indent=0) + "\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    name: str
    valid: int
    recovered: int
    wrong: int
    invented: int
    summary: dict[str, object]


def score(name: str, fixes: list[dict[str, object]], summary: dict[str, object]) -> Score:
    truth = json.loads((DATA / f"{name}.truth.json").read_text())
    by_t = {t: (la, lo) for t, la, lo in truth["valid"]}
    recovered = wrong = invented = 0
    for f in fixes:
        want = by_t.get(str(f["t"]))
        if want is None:
            invented += 1
        elif (
            abs(float(f["lat"]) - want[0]) <= POSITION_TOLERANCE_DEG  # type: ignore[arg-type]
            and abs(float(f["lon"]) - want[1]) <= POSITION_TOLERANCE_DEG  # type: ignore[arg-type]
        ):
            recovered += 1
        else:
            wrong += 1
    return Score(
        name=name, valid=len(by_t), recovered=recovered, wrong=wrong, invented=invented,
        summary=summary,
    )  # fmt: skip


def decode_with(tree: Path, name: str) -> Score:
    """``fleetwatch decode`` of ``tree`` (a checkout) on one corpus file, scored."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-m", "fleetwatch", "decode", str(DATA / f"{name}.nmea")],
        capture_output=True, check=True, env=env, cwd=tree, timeout=300,
    )  # fmt: skip
    fixes = [json.loads(line) for line in out.stdout.splitlines()]
    return score(name, fixes, json.loads(out.stderr.splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("write", "measure"))
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    if args.command == "write":
        write()
        return
    total = [0, 0, 0, 0]
    print(f"tree: {args.tree}")
    print(f"{'file':24s} {'valid':>6s} {'recovered':>10s} {'wrong':>6s} {'invented':>9s}  rejects")
    for name in CORPUS:
        s = decode_with(args.tree, name)
        for i, v in enumerate((s.valid, s.recovered, s.wrong, s.invented)):
            total[i] += v
        print(f"{name:24s} {s.valid:6d} {s.recovered:10d} {s.wrong:6d} {s.invented:9d}  "
              f"{s.summary.get('rejects')}")  # fmt: skip
    pct = 100.0 * total[1] / total[0]
    print(f"{'all':24s} {total[0]:6d} {total[1]:10d} {total[2]:6d} {total[3]:9d}  "
          f"recovered {pct:.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
