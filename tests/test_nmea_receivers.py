"""What real receivers send (issue 11): each class of sentence the decoder used to lose, with
sentences and tracks of our own.  Every decode goes through both decoders (kernel == reference).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.nmea import DecodeOptions, Decoder, DecodeResult, ReferenceDecoder, decode_reference
from ingest.nmea_encode import (
    encode_gga,
    encode_gll,
    encode_gns,
    encode_rmc,
    encode_vtg,
    encode_zda,
)
from tests.nmea_helpers import T0, S, accounted, assert_same_result, fix, reasons, sentence, utc

DAY = 86_400 * S
ARCHIVE = DecodeOptions(date_from_receive_time=False, max_age_days=1e5)


def both(
    payloads: list[bytes],
    recv: int | list[int] = T0,
    options: DecodeOptions = DecodeOptions(),  # noqa: B008
) -> DecodeResult:
    recvs = recv if isinstance(recv, list) else [recv] * len(payloads)
    units = ["u1"] * len(payloads)
    a = Decoder(options).decode(units, payloads, recvs)
    assert_same_result(a, decode_reference(units, payloads, recvs, options))
    assert accounted(a) == a.counts["sentences"]
    return a


# --- 1, 2: time-only fixes take the date of the unit's RMC / ZDA around them ---------------


def test_gga_before_the_first_rmc_takes_the_date_of_the_rmc_after_it() -> None:
    old = utc(2011, 6, 14, 8, 0, 0)
    early = [encode_gga(fix(old + i * S, lat=48.1 + i * 1e-5)) for i in range(5)]
    later = [encode_gga(fix(old + i * S, lat=48.1 + i * 1e-5)) + encode_rmc(
        fix(old + i * S, lat=48.1 + i * 1e-5)) for i in range(5, 8)]  # fmt: skip
    # an archive: the receive time is not real (here: years later), so it must date nothing
    r = both(early + later, recv=T0, options=ARCHIVE)
    assert r.fixes.t_us.tolist() == [old + i * S for i in range(8)]
    assert r.rejects == []


def test_zda_dates_a_gga_only_receiver_across_midnight() -> None:
    t0 = utc(2014, 3, 2, 23, 59, 57)
    payloads = [encode_zda(t0)] + [encode_gga(fix(t0 + i * S, lat=48.1 + i * 1e-5))
                                   for i in range(6)]  # fmt: skip
    r = both(payloads, recv=T0, options=ARCHIVE)
    assert r.fixes.t_us.tolist() == [t0 + i * S for i in range(6)]
    assert r.counts["dating"] == 1
    assert r.fixes.to_fixes()[5].t_us == utc(2014, 3, 3, 0, 0, 2)


def test_the_previous_anchor_is_remembered_across_batches() -> None:
    t0 = utc(2016, 12, 31, 23, 59, 58)
    for d in (Decoder(ARCHIVE), ReferenceDecoder(ARCHIVE)):
        d.decode(["u1"], [encode_zda(t0)], [T0])
        r = d.decode(["u1"], [encode_gns(fix(t0 + 3 * S))], [T0])
        assert r.fixes.t_us.tolist() == [utc(2017, 1, 1, 0, 0, 1)]
        other = d.decode(["u2"], [encode_gns(fix(t0 + 3 * S))], [T0])
        assert reasons(other) == ["undated"], "another unit's date is not this unit's"


def test_an_anchor_received_more_than_12_hours_apart_is_not_used() -> None:
    t0 = utc(2020, 5, 1, 10, 0, 0)
    d = Decoder(ARCHIVE)
    d.decode(["u1"], [encode_zda(t0)], [t0])
    r = d.decode(["u1"], [encode_gga(fix(t0 + 3 * S))], [t0 + 2 * DAY])
    assert reasons(r) == ["undated"]


def test_without_any_date_a_live_fix_takes_its_receive_time_and_an_archive_fix_is_undated() -> None:
    f = fix(utc(2026, 11, 23, 23, 59, 58))
    live = both([encode_gga(f)], recv=utc(2026, 11, 24, 0, 0, 3))
    assert live.fixes.t_us.tolist() == [f.t_us]
    archive = both([encode_gga(f), encode_gll(f), encode_gns(f)], options=ARCHIVE)
    assert reasons(archive) == ["undated"] * 3
    assert "receive time" in archive.rejects[0].detail


def test_a_receiver_default_date_dates_nothing() -> None:
    """ZDA or RMC with an RTC default date (1980) before the fix is no dating source."""
    t = utc(2026, 11, 23, 8, 0, 0)
    zda = sentence("GPZDA,080000.00,06,01,1980,00,00")
    r = both([zda, encode_gga(fix(t))], options=ARCHIVE)
    assert reasons(r) == ["power_up_default", "undated"]


# --- 3: long RTK sentences -----------------------------------------------------------------


@pytest.mark.parametrize("decimals", [8, 9, 10])
def test_rtk_sentences_over_82_characters_are_read_and_counted_as_a_note(decimals: int) -> None:
    f = fix(quality=4)
    rmc, gga = encode_rmc(f, decimals=decimals), encode_gga(f, decimals=decimals, rtk=True)
    assert len(gga.rstrip()) > 82
    r = both([rmc + gga])
    (got,) = r.fixes.to_fixes()
    assert got.quality == 4
    assert abs(got.lat - f.lat) < 1e-8
    assert r.rejects == []
    assert r.counts["long_sentence"] == sum(len(x.rstrip()) > 82 for x in (rmc, gga))


# --- 4: any non-proprietary talker -----------------------------------------------------------


@pytest.mark.parametrize("talker", ["IN", "II", "EC", "GI", "U1", "HE"])
def test_any_non_proprietary_talker_gives_a_fix(talker: str) -> None:
    f = fix()
    r = both([encode_rmc(f, talker=talker) + encode_gga(f, talker=talker)
              + encode_vtg(f, talker=talker)])  # fmt: skip
    (got,) = r.fixes.to_fixes()
    assert got.talker == talker
    assert r.counts["merged"] == 2


def test_a_vtg_without_epoch_is_skipped_under_its_own_talker() -> None:
    r = both([encode_vtg(fix(), talker="IN")])
    assert r.counts["skipped:INVTG"] == 1


# --- 5: proprietary sentences are skipped before any check ----------------------------------


def test_a_97_character_sirf_line_is_skipped_not_too_long() -> None:
    psrf = sentence("PSRFEPE," + ",".join(["12345"] * 14) + ",1.5")
    assert len(psrf.rstrip()) > 96
    huge = sentence("PSRF150," + "1" * 300)
    r = both([psrf + encode_rmc(fix()) + psrf + huge])
    assert r.counts["skipped:PSRFEPE"] == 2
    assert r.counts["skipped:PSRF150"] == 1
    assert r.rejects == []
    assert len(r.fixes) == 1


def test_a_proprietary_address_is_trusted_only_with_a_right_checksum() -> None:
    """Line noise that looks like '$P...' must not become sentence types (skipped:* keys are
    metric labels): a bad or missing checksum is refused as for any sentence."""
    broken = b"$PSRF151,0,garbage with a bad*ZZ\r\n$PQX7,1,2*00\r\n$PSRF," + b"9" * 200 + b"\r\n"
    r = both([broken])
    assert reasons(r) == ["bad_checksum", "bad_checksum", "missing_checksum"]
    assert not any(k.startswith("skipped:") for k in r.counts)


def test_a_non_proprietary_sentence_over_the_bound_is_still_too_long() -> None:
    r = both([sentence("GPGSV," + "1," * 60 + "1")])
    assert reasons(r) == ["too_long"]


# --- 6: GLL ----------------------------------------------------------------------------------


def test_gll_alone_is_a_fix_dated_like_gga() -> None:
    f = fix()
    r = both([encode_gll(f), encode_gll(fix(T0 + S, lat=48.1001), mode=None)])
    assert r.fixes.t_us.tolist() == [T0, T0 + S]
    got = r.fixes.to_fixes()[0]
    assert (got.talker, got.quality, got.sats) == ("GP", -1, -1)
    assert abs(got.lat - f.lat) < 1e-6


def test_rmc_gga_and_gll_of_one_epoch_give_one_fix() -> None:
    f = fix()
    r = both([encode_rmc(f) + sentence("GPGSA,A,3,,,,,,,,,,,,,2.0,1.0,1.5") + encode_gga(f)
              + encode_gll(f)])  # fmt: skip
    assert len(r.fixes) == 1
    assert r.counts["merged"] == 2
    assert r.rejects == []


def test_gga_and_gns_of_one_epoch_give_one_fix() -> None:
    f = fix(quality=2)
    r = both([encode_gga(f) + encode_gns(f, talker="GN")])
    assert len(r.fixes) == 1
    assert r.fixes.to_fixes()[0].talker == "GP", "GGA's position wins over GNS"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GPGLL,4806.0000,N,01130.0000,E,080000.00,V,N", "no_fix"),
        ("GPGLL,4806.0000,N,01130.0000,E,080000.00,A,N", "no_fix"),
        ("GPGLL,,,,,080000.00,A,A", "no_fix"),
        ("GPGLL,4806.0000,N,01130.0000,E,080000.00,X,A", "malformed"),
        ("GPGLL,4806.0000,N,01130.0000,E,0800,A,A", "malformed"),
        ("GPGLL,4806.0000,X,01130.0000,E,080000.00,A,A", "malformed"),
    ],
)
def test_gll_void_and_malformed(body: str, reason: str) -> None:
    assert reasons(both([sentence(body)])) == [reason]


def test_nmea_15_gll_without_time_is_skipped() -> None:
    r = both([sentence("GPGLL,4806.0000,N,01130.0000,E")])
    assert r.counts["skipped:GPGLL"] == 1
    assert r.rejects == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GPZDA,,,,,,", "no_fix"),
        ("GPZDA,080000.00,31,02,2024,00,00", "malformed"),
        ("GPZDA,080000.00,1,2,24,00,00", "malformed"),
        ("GPZDA,080000.00,01,13,2024,00,00", "malformed"),
    ],
)
def test_zda_void_and_malformed(body: str, reason: str) -> None:
    assert reasons(both([sentence(body)])) == [reason]


# --- 7: binary bytes before '$' --------------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=60), st.booleans())
def test_binary_bytes_directly_before_a_sentence_do_not_cost_it(blob: bytes, gga: bool) -> None:
    f = fix()
    s = encode_gga(f) if gga else encode_rmc(f)
    clean = Decoder().decode(["u1"], [s], [T0])
    r = both([blob + s])
    assert r.fixes.t_us.tolist() == clean.fixes.t_us.tolist()
    assert np.array_equal(r.fixes.lat, clean.fixes.lat)


# --- 11: the jump filter and a lone multipath outlier ---------------------------------------


def multipath_track(
    *, n: int, step_s: int, moving: bool, seed: int
) -> tuple[list[bytes], list[bool]]:
    """RMC sentences of a unit parked (sigma 6 m) or moving at 12 m/s (sigma 3 m), 1 % of the
    fixes replaced by a 40-80 m multipath jump; and which fixes are genuine."""
    rng = np.random.default_rng(seed)
    sigma = 3.0 if moving else 6.0
    out, genuine = [], []
    for i in range(n):
        x = 12.0 * step_s * i if moving else 0.0
        dx, dy = rng.normal(0, sigma, 2)
        outlier = rng.random() < 0.01
        if outlier:
            a = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(40, 80)
            dx, dy = d * math.cos(a), d * math.sin(a)
        lat = 48.1 + dy / 111_195.0
        lon = 11.5 + (x + dx) / (111_195.0 * math.cos(math.radians(48.1)))
        out.append(encode_rmc(fix(T0 + i * step_s * S, lat=lat, lon=lon), decimals=6))
        genuine.append(not outlier)
    return out, genuine


@pytest.mark.parametrize("step_s", [1, 5])
@pytest.mark.parametrize("moving", [False, True])
def test_a_lone_multipath_outlier_never_costs_the_genuine_fixes_after_it(
    step_s: int, moving: bool
) -> None:
    n = 3600 // step_s * 2
    sentences, genuine = multipath_track(n=n, step_s=step_s, moving=moving, seed=step_s + moving)
    assert sum(not g for g in genuine) >= 5
    r = both(sentences, recv=T0 + n * step_s * S)
    kept = set(r.fixes.t_us.tolist())
    lost = [i for i in range(n) if genuine[i] and T0 + i * step_s * S not in kept]
    assert lost == []


def test_a_100_m_jump_from_a_confirmed_track_is_still_rejected() -> None:
    track = [fix(T0 + i * S, lat=48.1 + i * 1e-5) for i in range(5)]
    jump = fix(T0 + 5 * S, lat=48.1 + 5e-5 + 100 / 111_195.0)
    back = fix(T0 + 6 * S, lat=48.1 + 6e-5)
    r = both([encode_rmc(f) for f in [*track, jump, back]])
    assert reasons(r) == ["implausible_jump"]
    assert back.t_us in r.fixes.t_us.tolist()


def test_the_fix_after_an_accepted_outlier_is_accepted_past_it() -> None:
    """Parked: a 70 m outlier passes the 74 m/s limit; the genuine fix after it is 72 m from
    the outlier at a (-2 m) but only 2 m from the confirmed position: accepted (the old filter
    compared it with the outlier and refused it if over the limit)."""
    m = 1 / 111_195.0
    lats = [48.1, 48.1 + 1 * m, 48.1 + 70 * m, 48.1 - 5 * m, 48.1]
    r = both([encode_rmc(fix(T0 + i * S, lat=la)) for i, la in enumerate(lats)])
    assert len(r.fixes) == 5
    assert r.counts["bypassed_lone_fix"] == 1
