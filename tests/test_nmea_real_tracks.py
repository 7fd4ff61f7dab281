"""The real receiver logs in ../shared/data/real-tracks: their faults, each by a documented rule
(docs/nmea.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.nmea import DecodeOptions, Decoder, DecodeResult, decode_reference
from ingest.nmea.filters import dist2_m
from tests.nmea_helpers import accounted, assert_same_result, utc

MUNICH = "genivi_munich_petuelring_car.nmea"
REGENSBURG = "genivi_20100411_Geko301_Regensburg_car.nmea"
#: Archive logs: receive time = shortly after the log ends, with the age bound opened.
RECV = {MUNICH: utc(2009, 4, 1, 13, 12), REGENSBURG: utc(2010, 4, 11, 17, 25)}


def decode_file(path: Path, lines_per_payload: int = 0) -> tuple[DecodeResult, DecodeResult]:
    data = path.read_bytes()
    if lines_per_payload:
        lines = data.splitlines(keepends=True)
        payloads = [
            b"".join(lines[i : i + lines_per_payload])
            for i in range(0, len(lines), lines_per_payload)
        ]
    else:
        payloads = [data]
    recv = [RECV[path.name]] * len(payloads)
    units = ["car"] * len(payloads)
    opts = DecodeOptions(max_age_days=1.0)
    return Decoder(opts).decode(units, payloads, recv), decode_reference(
        units, payloads, recv, opts
    )


@pytest.mark.parametrize("name", [MUNICH, REGENSBURG])
@pytest.mark.parametrize("lines_per_payload", [0, 1, 7])
def test_real_logs_decode_without_crash_and_both_decoders_agree(
    real_tracks: Path, name: str, lines_per_payload: int
) -> None:
    a, b = decode_file(real_tracks / name, lines_per_payload)
    assert_same_result(a, b)
    assert accounted(a) == a.counts["sentences"]
    assert len(a.fixes) > 700


@pytest.mark.parametrize(("name", "voids"), [(MUNICH, 20), (REGENSBURG, 16)])
def test_void_fixes_are_rejected(real_tracks: Path, name: str, voids: int) -> None:
    r, _ = decode_file(real_tracks / name)
    void_rmc = [x for x in r.rejects if x.reason == "no_fix" and x.sentence[3:6] == b"RMC"]
    assert len(void_rmc) == voids
    assert all(b",V," in x.sentence for x in void_rmc)
    accepted_times = set(r.fixes.t_us.tolist())
    for x in void_rmc:
        hms = x.sentence.split(b",")[1]
        if hms:  # Garmin's void RMC has no time at all
            t = utc(2009, 4, 1, int(hms[:2]), int(hms[2:4]), int(hms[4:6]))
            assert t not in accepted_times


def test_munich_backwards_timestamp_keeps_the_first_fix_of_each_time(real_tracks: Path) -> None:
    # 124341, 124342, then 124341 and 124342 again with other positions: the repeats are
    # duplicates by fix time (rule: one fix per unit and time; the first one is kept).
    r, _ = decode_file(real_tracks / MUNICH)
    dups = [x for x in r.rejects if x.reason == "duplicate"]
    assert [x.sentence[7:13] for x in dups] == [b"124341", b"124342"]
    i = r.fixes.t_us.tolist().index(utc(2009, 4, 1, 12, 43, 41))
    assert r.fixes.lat[i] == pytest.approx(48 + 10.5392 / 60)
    assert np.all(np.diff(r.fixes.t_us) > 0)


def test_munich_frozen_position_then_78_m_jump(real_tracks: Path) -> None:
    r, _ = decode_file(real_tracks / MUNICH)
    jumps = {x.sentence[7:13] for x in r.rejects if x.reason == "implausible_jump"}
    assert b"125915" in jumps  # 78 m in 1 s from the frozen 125914
    t = r.fixes.t_us.tolist()
    assert utc(2009, 4, 1, 12, 59, 16) in t, "the next fix is plausible again (91 m in 2 s)"
    assert sum(1 for x in t if x > utc(2009, 4, 1, 12, 59, 15)) > 500


def test_munich_no_two_consecutive_accepted_fixes_exceed_the_speed_limit(
    real_tracks: Path,
) -> None:
    r, _ = decode_file(real_tracks / MUNICH)
    opts = DecodeOptions()
    jumps = {x.sentence[7:13] for x in r.rejects if x.reason == "implausible_jump"}
    assert {b"124038", b"125915", b"130116"} <= jumps
    t, lat, lon = r.fixes.t_us, r.fixes.lat, r.fixes.lon
    for i in range(1, len(t)):
        dt = max((t[i] - t[i - 1]) / 1e6, opts.jump_min_dt_s)
        d = dist2_m(lat[i - 1], lon[i - 1], lat[i], lon[i]) ** 0.5
        assert d <= opts.max_speed_kmh / 3.6 * dt + opts.jump_tolerance_m


def test_garmin_proprietary_sentences_are_skipped_and_counted(real_tracks: Path) -> None:
    r, _ = decode_file(real_tracks / REGENSBURG)
    assert r.counts["skipped:PGRME"] == 789
    assert r.counts["skipped:PGRMZ"] == 789
    assert r.counts["skipped:GPGSV"] == 2042
    assert not any(x.sentence.startswith(b"$PGRM") for x in r.rejects)


def test_munich_hdop_nan_field_is_malformed_but_the_epoch_keeps_its_rmc(real_tracks: Path) -> None:
    r, _ = decode_file(real_tracks / MUNICH)
    (bad,) = [x for x in r.rejects if x.reason == "malformed"]
    assert b"0NaN" in bad.sentence
    assert utc(2009, 4, 1, 13, 8, 49) in r.fixes.t_us.tolist()


def test_garmin_gll_beside_rmc_and_gga_merges_into_the_same_fixes(real_tracks: Path) -> None:
    """The Geko's GLL (same time as its RMC and GGA, in the same cycle) is read now: it adds no
    fix and no duplicate, and every fix is dated by its RMC."""
    data = (real_tracks / REGENSBURG).read_bytes()
    cycles = data.split(b"$GPBOD")  # the Geko starts each cycle with BOD
    payloads = [b"$GPBOD" + c for c in cycles[1:]]
    recv = [RECV[REGENSBURG]] * len(payloads)
    opts = DecodeOptions(max_age_days=1.0)
    r = Decoder(opts).decode(["car"] * len(payloads), payloads, recv)
    assert_same_result(r, decode_reference(["car"] * len(payloads), payloads, recv, opts))
    assert "skipped:GPGLL" not in r.counts
    assert "reject:duplicate" not in r.counts
    assert len(r.fixes) == 774
    assert r.counts["merged"] >= 2 * 774 - 30
