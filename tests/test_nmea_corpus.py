"""The regression corpus (tests/data/nmea, tests/nmea_corpus.py): every class of issue 11 in a
receiver log of its own, decoded by ``fleetwatch decode`` as an archive (``--recv-time auto``).

Targets: >= 98 % of the valid epochs recovered, no wrong position, no invented fix (a fix at a
time the receiver never had a valid position, e.g. dated by the wall clock).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from fleetwatch.cmd_decode import run
from tests.nmea_corpus import CORPUS, DATA, Score, build, score


def decode(name: str) -> Score:
    args = argparse.Namespace(
        file=DATA / f"{name}.nmea", unit=None, recv_time="auto", no_checksum_required=False,
        max_speed_kmh=250.0, max_age_days=30.0, week_rollover="correct", show_rejects=False,
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    # the wall clock must not matter: any "now" gives the same result on an archive
    assert run(args, stdout=out, stderr=err, now_us=4_000_000_000_000_000) == 0
    fixes = [json.loads(line) for line in out.getvalue().splitlines()]
    return score(name, fixes, json.loads(err.getvalue().splitlines()[-1]))


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    return {name: decode(name) for name in CORPUS}


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_file_is_what_the_generator_writes(name: str) -> None:
    data, truth = build(name)
    assert (DATA / f"{name}.nmea").read_bytes() == data
    assert json.loads((DATA / f"{name}.truth.json").read_text()) == truth


@pytest.mark.parametrize("name", list(CORPUS))
def test_no_wrong_position_and_no_invented_fix(scores: dict[str, Score], name: str) -> None:
    s = scores[name]
    assert (s.wrong, s.invented) == (0, 0), s


def test_valid_epochs_recovered_at_least_98_percent(scores: dict[str, Score]) -> None:
    valid = sum(s.valid for s in scores.values())
    recovered = sum(s.recovered for s in scores.values())
    assert valid > 2000
    assert recovered / valid >= 0.98, {n: (s.recovered, s.valid) for n, s in scores.items()}


def test_each_class_decodes_as_documented(scores: dict[str, Score]) -> None:
    for name, s in scores.items():
        rejects = s.summary["rejects"]
        assert isinstance(rejects, dict)
        assert "too_long" not in rejects, (name, rejects)
        assert "too_old" not in rejects, (name, rejects)
    assert scores["gga_before_rmc_2011"].summary["recv_time"] == "2011-06-14T08:06:29Z"
    assert scores["gga_before_rmc_2011"].summary["recv_time_source"] == "auto:latest-fix"
    assert scores["rtk_long_2021"].summary["notes"]["long_sentence"] == 518  # type: ignore[index]
    assert scores["sirf_psrf_2008"].summary["skipped"] == {"PSRFEPE": 900}
    assert scores["zda_gga_only_2014"].summary["dating"] == 40
    undated = scores["gns_only_undated"]
    assert undated.summary["rejects"] == {"undated": len(_truth(undated.name)["undatable"])}
    assert undated.summary["accepted"] == 0


def _truth(name: str) -> dict[str, list[object]]:
    return json.loads(Path(DATA / f"{name}.truth.json").read_text())  # type: ignore[no-any-return]


REAL = DATA / "gpsd"


def _iso(text: str) -> str:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()


def _rmc_oracle(path: Path) -> dict[str, tuple[float, float]]:
    """An independent reading of the log: every RMC with status A and a right checksum ->
    time (ISO, UTC) and position, by plain string splitting and float()."""
    out: dict[str, tuple[float, float]] = {}
    for line in path.read_bytes().decode("ascii").splitlines():
        if not line.startswith("$") or line[3:6] != "RMC":
            continue
        body, hx = line[1:].split("*")
        x = 0
        for c in body.encode():
            x ^= c
        f = body.split(",")
        if x != int(hx, 16) or f[2] != "A":
            continue
        t = dt.datetime(
            2000 + int(f[9][4:]), int(f[9][2:4]), int(f[9][:2]), int(f[1][:2]),
            int(f[1][2:4]), int(f[1][4:6]), round(float("0" + f[1][6:]) * 1e6), tzinfo=dt.UTC,
        ).isoformat()  # fmt: skip
        lat = (int(f[3][:2]) + float(f[3][2:]) / 60) * (1 if f[4] == "N" else -1)
        lon = (int(f[5][:3]) + float(f[5][3:]) / 60) * (1 if f[6] == "E" else -1)
        out[t] = (lat, lon)
    return out


@pytest.mark.parametrize("name", ["nmea-rtk.excerpt", "furuno_gl_ga.excerpt"])
def test_real_gpsd_logs_every_valid_rmc_epoch_recovered_none_invented(name: str) -> None:
    """Real receivers (Trimble RTK: GGA before RMC, 88-92 characters; Furuno: RMC + GNS + GGA +
    ZDA): the old decoder recovered none of either (too_long; GNS dated today, RMC too_old)."""
    path = REAL / f"{name}.log"
    want = _rmc_oracle(path)
    assert len(want) >= 4
    args = argparse.Namespace(
        file=path, unit=None, recv_time="auto", no_checksum_required=False,
        max_speed_kmh=250.0, max_age_days=30.0, week_rollover="correct", show_rejects=False,
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    assert run(args, stdout=out, stderr=err, now_us=4_000_000_000_000_000) == 0
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    times = [_iso(f["t"]) for f in got]
    assert sorted(times) == sorted(want)
    for t, f in zip(times, got, strict=True):
        lat, lon = want[t]
        assert abs(f["lat"] - lat) < 1e-7  # the JSON output has 7 decimals
        assert abs(f["lon"] - lon) < 1e-7
    assert json.loads(err.getvalue())["rejects"] == {}
