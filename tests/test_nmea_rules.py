"""The decoding rules of docs/nmea.md, one behaviour per test (reliability.md items 8-12)."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.nmea import DecodeOptions, Decoder, DecodeResult, RejectReason, decode_reference
from ingest.nmea.options import WEEK_ROLLOVER_US
from ingest.nmea_encode import encode_gga, encode_gns, encode_rmc, encode_vtg
from tests.nmea_helpers import T0, S, accounted, assert_same_result, fix, reasons, sentence, utc

DAY = 86_400 * S


def both(
    payloads: list[bytes], recv: int | list[int] = T0, unit: str = "u1", **opts: object
) -> DecodeResult:
    """Decode with both decoders, assert they agree, return the result."""
    options = DecodeOptions(**opts)  # type: ignore[arg-type]
    recvs = recv if isinstance(recv, list) else [recv] * len(payloads)
    units = [unit] * len(payloads)
    a = Decoder(options).decode(units, payloads, recvs)
    b = decode_reference(units, payloads, recvs, options)
    assert_same_result(a, b)
    assert accounted(a) == a.counts["sentences"]
    return a


# --- framing (reliability 8) ---------------------------------------------------------------


def test_rmc_and_gga_of_one_epoch_merge_into_one_fix() -> None:
    f = fix()
    r = both([encode_rmc(f) + encode_gga(f)])
    (got,) = r.fixes.to_fixes()
    assert got.t_us == f.t_us
    assert got.quality == 1
    assert got.sats == 8
    assert got.speed_kmh == pytest.approx(36.0, abs=1e-2)
    assert got.alt_m == pytest.approx(500.0)
    assert r.counts["merged"] == 1


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r", b""])
def test_line_ends_cr_lf_crlf_and_none_between_sentences(eol: bytes) -> None:
    f1, f2 = fix(), fix(T0 + S, lat=48.1001)
    payload = encode_rmc(f1).rstrip() + eol + encode_rmc(f2).rstrip()
    assert len(both([payload]).fixes) == 2


def test_garbage_binary_and_truncation_resynchronise_at_next_dollar() -> None:
    good = [encode_rmc(fix(T0 + i * S, lat=48.1 + i * 1e-4)) for i in range(3)]
    payload = (
        b"\x00\xff garbage" + good[0]
        + b"$GPRMC,0800,A,48" + good[1]  # truncated sentence, no line end, then a good one
        + bytes(range(256)) + good[2]
    )  # fmt: skip
    r = both([payload])
    assert len(r.fixes) == 3
    assert set(reasons(r)) <= {"missing_checksum", "bad_checksum", "malformed", "too_long"}


def test_sentence_longer_than_the_sane_bound_is_too_long() -> None:
    long = sentence(
        "GPRMC,080000.00,A,4806.000000000,N,01130.000000000,E,0.0,90,231126," + "0" * 50 + ",E,A"
    )
    assert len(long.rstrip()) > 120
    r = both([long])
    assert reasons(r) == ["too_long"]
    assert "120" in r.rejects[0].detail
    assert len(r.fixes) == 0


def test_checksum_bad_missing_and_lower_case() -> None:
    f = fix()
    good = encode_rmc(f)
    bad = good.replace(good[-4:-2], b"00" if good[-4:-2] != b"00" else b"11")
    nochk = good[: good.index(b"*")] + b"\r\n"
    r = both([bad + nochk])
    assert reasons(r) == ["bad_checksum", "missing_checksum"]
    assert len(both([encode_rmc(f, lower_hex=True)]).fixes) == 1
    assert len(both([nochk], require_checksum=False).fixes) == 1


def test_proprietary_and_other_sentences_are_skipped_and_counted_not_rejected() -> None:
    payload = (
        sentence("PGRME,5.5,M,7.0,M,8.9,M") + sentence("GPGSV,3,1,12,02,19,043,00")
        + sentence("IIMWV,214.8,R,0.1,K,A") + encode_rmc(fix())
    )  # fmt: skip
    r = both([payload])
    assert r.counts["skipped:PGRME"] == 1
    assert r.counts["skipped:GPGSV"] == 1
    assert r.counts["skipped:IIMWV"] == 1
    assert r.rejects == []
    assert len(r.fixes) == 1


def test_malformed_fields_are_rejected_with_the_field_named() -> None:
    r = both([sentence("GPRMC,080000.00,A,48x6.0,N,01130.0,E,,,231126,,,A")])
    assert reasons(r) == ["malformed"]
    assert "latitude" in r.rejects[0].detail


# --- invalid fixes (reliability 9) ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "GPRMC,080000.00,V,4806.0,N,01130.0,E,,,231126,,,N",  # void
        "GPRMC,080000.00,A,4806.0,N,01130.0,E,,,231126,,,N",  # mode N
        "GPGGA,080000.00,4806.0,N,01130.0,E,0,00,,,M,,M,,",  # quality 0
        "GNGNS,080000.00,4806.0,N,01130.0,E,NN,00,,,,,",  # GNS mode N
        "GPRMC,080000.00,A,,,,,,,231126,,,A",  # empty position
        "GPGGA,,,,,,0,00,,,M,,M,,",  # Garmin's void GGA
    ],
)
def test_no_fix_sentences_never_become_positions(body: str) -> None:
    r = both([sentence(body)])
    assert reasons(r) == ["no_fix"]
    assert len(r.fixes) == 0


def test_zero_position_out_of_range_and_power_up_defaults() -> None:
    payloads = [
        sentence("GPRMC,080000.00,A,0000.000,N,00000.000,E,,,231126,,,A"),
        sentence("GPRMC,080001.00,A,9100.000,N,01130.000,E,,,231126,,,A"),
        sentence("GPRMC,080002.00,A,4806.000,N,18100.000,E,,,231126,,,A"),
        sentence("GPRMC,080003.00,A,9000.000,N,00000.000,E,,,231126,,,A"),  # 90N
        sentence("GPRMC,000012.00,A,4806.000,N,01130.000,E,,,060180,,,A"),  # 1980-01-06
    ]
    r = both(payloads)
    assert reasons(r) == [
        "zero_position", "out_of_range", "out_of_range", "power_up_default", "power_up_default",
    ]  # fmt: skip
    assert len(r.fixes) == 0


# --- dates (reliability 10) ----------------------------------------------------------------


def test_future_fix_beyond_five_minutes_is_rejected() -> None:
    ok, late = fix(T0 + 299 * S), fix(T0 + 301 * S, lat=48.1001)
    r = both([encode_rmc(ok), encode_rmc(late)], recv=T0)
    assert reasons(r) == ["future_time"]
    assert len(r.fixes) == 1


def test_week_rollover_corrected_when_plausible_else_rejected() -> None:
    true_t = T0 - 10 * S
    rolled = fix(true_t - WEEK_ROLLOVER_US)
    r = both([encode_rmc(rolled)], recv=T0)
    assert r.fixes.t_us.tolist() == [true_t]
    assert r.counts["corrected:week_rollover"] == 1
    r = both([encode_rmc(rolled)], recv=T0, week_rollover="reject")
    assert reasons(r) == ["week_rollover"]
    # 1024 weeks back from a time 100 days before receive: not plausible, so just too old.
    r = both([encode_rmc(fix(T0 - 100 * DAY - WEEK_ROLLOVER_US))], recv=T0)
    assert reasons(r) == ["too_old"]


def test_too_old_bound_is_configurable_and_hours_old_backlog_is_kept() -> None:
    old = fix(T0 - 40 * DAY)
    backlog = fix(T0 - 5 * 3600 * S, lat=48.2)
    r = both([encode_rmc(old), encode_rmc(backlog)], recv=T0)
    assert reasons(r) == ["too_old"]
    assert r.fixes.t_us.tolist() == [backlog.t_us]
    assert len(both([encode_rmc(old)], recv=T0, max_age_days=60.0).fixes) == 1


def test_gga_only_unit_takes_its_date_from_receive_time_across_midnight() -> None:
    before_midnight = utc(2026, 11, 23, 23, 59, 58)
    r = both([encode_gga(fix(before_midnight))], recv=utc(2026, 11, 24, 0, 0, 3))
    assert r.fixes.t_us.tolist() == [before_midnight]
    after_midnight = utc(2026, 11, 24, 0, 0, 1)
    r = both([encode_gga(fix(after_midnight))], recv=utc(2026, 11, 23, 23, 59, 59))
    assert r.fixes.t_us.tolist() == [after_midnight]


# --- leap seconds (reliability 11) ---------------------------------------------------------


def test_leap_second_235960_and_repeated_000000_keep_every_fix() -> None:
    day = "311216"
    bodies = [
        f"GPRMC,235959.00,A,4806.0000,N,01130.0000,E,10.0,90.0,{day},,,A",
        f"GPRMC,235960.00,A,4806.0000,N,01130.0050,E,10.0,90.0,{day},,,A",
        "GPRMC,000000.00,A,4806.0000,N,01130.0100,E,10.0,90.0,010117,,,A",
        "GPRMC,000000.00,A,4806.0000,N,01130.0150,E,10.0,90.0,010117,,,A",  # repeated
        "GPRMC,000001.00,A,4806.0000,N,01130.0200,E,10.0,90.0,010117,,,A",
    ]
    r = both([sentence(b) for b in bodies], recv=utc(2017, 1, 1, 0, 0, 5))
    assert r.rejects == []
    assert len(r.fixes) == 5
    t = r.fixes.t_us
    assert np.all(np.diff(t) > 0), "fix times stay strictly increasing"
    assert t[1] == utc(2016, 12, 31, 23, 59, 59) + 999_999
    assert t[3] == t[2] + 1
    assert r.counts["restamped:leap_repeat"] == 1


# --- any talker (reliability 12) -----------------------------------------------------------


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB", "BD", "QZ"])
def test_every_talker_gives_the_same_fix(talker: str) -> None:
    f = fix()
    r = both([encode_rmc(f, talker=talker) + encode_gga(f, talker=talker)])
    (got,) = r.fixes.to_fixes()
    assert got.talker == talker
    assert (got.t_us, got.lat, got.lon, got.quality) == (f.t_us, r.fixes.lat[0], r.fixes.lon[0], 1)
    assert abs(got.lat - f.lat) < 1e-6
    assert abs(got.lon - f.lon) < 1e-6


def test_gns_only_receiver_with_vtg_gives_fixes_with_speed() -> None:
    f = fix(quality=2)
    r = both([encode_gns(f, talker="GN") + encode_vtg(f, talker="GN")])
    (got,) = r.fixes.to_fixes()
    assert got.quality == 2
    assert got.sats == 8
    assert got.speed_kmh == pytest.approx(36.0, abs=1e-2)
    assert got.course == pytest.approx(90.0)


def test_nmea_410_navigational_status_is_not_read_as_void() -> None:
    f = fix()
    r = both([encode_rmc(f, nav_status="V") + encode_gns(f, nav_status="V")])
    assert len(r.fixes) == 1
    assert r.rejects == []


# --- duplicates and jumps ------------------------------------------------------------------


def test_gprmc_and_gnrmc_of_one_epoch_give_one_fix() -> None:
    f = fix()
    r = both([encode_rmc(f, talker="GP") + encode_rmc(f, talker="GN")])
    assert len(r.fixes) == 1
    assert reasons(r) == ["duplicate"]


def test_qos1_redelivery_in_a_later_batch_is_a_duplicate() -> None:
    d = Decoder()
    p = encode_rmc(fix()) + encode_gga(fix())
    assert len(d.decode(["u1"], [p], [T0]).fixes) == 1
    again = d.decode(["u1"], [p], [T0 + S])
    assert len(again.fixes) == 0
    assert reasons(again) == ["duplicate"]
    assert len(d.decode(["u2"], [p], [T0]).fixes) == 1, "another unit is not a duplicate"


def test_jump_above_max_speed_rejected_and_unit_reanchors_after_a_bad_anchor() -> None:
    # The first fix is 5 km off (a bad anchor); the unit then drives consistently at 36 km/h.
    bad = fix(T0, lat=48.145)
    track = [fix(T0 + i * S, lat=48.1 + i * 9e-5) for i in range(1, 8)]
    r = both([encode_rmc(bad)] + [encode_rmc(f) for f in track])
    assert reasons(r) == ["implausible_jump", "implausible_jump"]
    assert r.fixes.t_us.tolist() == [bad.t_us] + [f.t_us for f in track[2:]]
    assert r.counts["reanchored"] == 1


def test_late_buffered_fixes_are_checked_against_the_time_nearest_fix() -> None:
    d = Decoder()
    live = [fix(T0 + i * S, lat=48.5 + i * 9e-5) for i in range(3)]
    d.decode(["u1"], [b"".join(encode_rmc(f) for f in live)], [T0 + 3 * S])
    # Hours-old backlog, 40 km away and backwards in time: valid (store-and-forward).
    backlog = [fix(T0 - 3600 * S + i * S, lat=48.14 + i * 9e-5) for i in range(3)]
    r = d.decode(["u1"], [b"".join(encode_rmc(f) for f in backlog)], [T0 + 4 * S])
    assert len(r.fixes) == 3
    assert r.rejects == []
    # A backlog fix far from its time-neighbours is still a jump.
    wild = fix(T0 - 3600 * S + 3 * S, lat=48.3)
    r = d.decode(["u1"], [encode_rmc(wild)], [T0 + 5 * S])
    assert reasons(r) == ["implausible_jump"]


def test_history_per_unit_is_bounded() -> None:
    d = Decoder(DecodeOptions(history_per_unit=4))
    for i in range(10):
        d.decode(["u1"], [encode_rmc(fix(T0 + i * S, lat=48.1 + i * 1e-5))], [T0 + i * S])
    assert d._filter.history("u1") == [T0 + i * S for i in range(6, 10)]


def test_inputs_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per payload"):
        Decoder().decode(["u1"], [b"", b""], [T0])


def test_reject_record_carries_unit_payload_and_receive_time() -> None:
    r = Decoder().decode(["a", "b"], [b"", sentence("GPRMC,1,V,,,,,,,,,,N")], [T0, T0 + 7])
    (rej,) = r.rejects
    assert (rej.payload_index, rej.unit_id, rej.recv_us) == (1, "b", T0 + 7)
    assert rej.reason is RejectReason.NO_FIX
    assert rej.sentence.startswith(b"$GPRMC")


def test_a_payload_of_garbage_is_counted_in_full_but_keeps_a_bounded_number_of_records() -> None:
    r = both([b"$" * 5000 + encode_rmc(fix())])
    assert r.counts["reject:missing_checksum"] == 5000
    assert len(r.rejects) == 100
    assert r.counts["rejects_not_kept"] == 4900
    assert len(r.fixes) == 1


def test_statistics_count_rows_handed_to_the_scalar_code() -> None:
    d = Decoder()
    good = [encode_rmc(fix(T0 + i * S, lat=48.1 + i * 1e-4)) for i in range(3)]
    d.decode(["u1"], [b"".join(good)], [T0 + 3 * S])
    assert d.statistics().parse_fallback_rows == 0
    assert d.statistics().filter_scalar_rows == 0
    d.decode(["u1", "u1"], [good[0], sentence("GPRMC,1,V,,,,,,,,,,N")], [T0 + 4 * S] * 2)
    st = d.statistics()
    assert st.parse_fallback_rows == 1, "the void RMC is decided by the scalar parser"
    assert st.filter_scalar_rows == 1, "a fix older than the unit's newest goes the scalar way"
    assert (st.batches, st.sentences, st.units_tracked) == (2, 5, 1)


def test_one_odd_fix_in_a_long_track_costs_one_scalar_decision_not_one_per_fix() -> None:
    """A backwards timestamp and a jump in the middle of a unit's batch: the filter decides
    those (and the fix that re-joins the track) one by one, the plain runs around them in bulk,
    with the same result as the reference."""
    ts = [T0 + i * S for i in range(200)]
    ts[100] = T0 - 30 * S  # a buffered fix arriving late: older than the unit's newest
    lats = [48.1 + i * 1e-4 for i in range(200)]
    lats[150] += 0.5  # a 55 km jump in one second
    payloads = [encode_rmc(fix(t, lat=la)) for t, la in zip(ts, lats, strict=True)]
    r = both(payloads, recv=T0 + 200 * S)
    assert reasons(r) == ["implausible_jump"]
    assert len(r.fixes) == 199
    d = Decoder()
    d.decode(["u1"] * 200, payloads, [T0 + 200 * S] * 200)
    # the late fix, the jump, and the fix after each (its step is from the odd one): 4 of 200
    assert d.statistics().filter_scalar_rows == 4
