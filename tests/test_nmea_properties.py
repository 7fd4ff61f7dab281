"""Hypothesis properties of the NMEA decoder: round trip, robustness, vectorised == reference,
chunking invariance."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.fixes import Fix
from ingest.nmea import DecodeOptions, Decoder, ReferenceDecoder, decode_reference
from ingest.nmea_encode import (
    encode_gga,
    encode_gll,
    encode_gns,
    encode_rmc,
    encode_vtg,
    encode_zda,
    frame,
)
from tests.nmea_helpers import T0, S, accounted, assert_same_result, fix

TALKERS = ["GP", "GN", "GL", "GA", "GB", "BD", "QZ", "IN", "II", "EC", "U1"]
REAL_LIKE = [
    b"$GPGSA,A,3,23,13,,20,25,,,,,,,,56.6,23.9,51.4*09",
    b"$PGRME,5.5,M,7.0,M,8.9,M*28",
    b"$GPRMC,124022.00,A,4810.8509,N,01133.9095,E,008.5,171.1,010409,002.0,E,A*3B",
    b"$GPGGA,124022.00,4810.8509,N,01133.9095,E,1,04,23.9,-0704.5,M,0046.3,M,,*41",
    b"$GPRMC,130829.00,V,4810.6572,N,01134.9923,E,,,010409,,,N*46",
    b"$GPGGA,130849.00,4810.6734,N,01134.4500,E,1,03,0NaN,00524.3,M,0046.3,M,,*1B",
    b"$GPRMC,,V,,,,,,,110410,1.6,E,N*3A",
    b"$GPGGA,,,,,,0,00,,,M,,M,,*66",
    b"$GPGLL,4901.5940,N,01203.9163,E,165744,A,A*4B",
    b"$GNZDA,165744.00,11,04,2010,00,00*7A",
    b"$PSRFEPE,12345,12345,12345,12345,12345,12345,12345,12345,12345,12345,12345,12345,1.5*00",
]


@st.composite
def fixes(draw: st.DrawFn, t_us: int | None = None) -> Fix:
    lat = draw(st.floats(-89.9, 89.9, allow_nan=False))
    lon = draw(st.floats(-180.0, 180.0, allow_nan=False))
    assume(abs(lat) > 1e-4 or abs(lon) > 1e-4)
    if t_us is None:
        t_us = T0 - draw(st.integers(0, 6 * 3600 * 100)) * 10_000  # centiseconds, as encoded
    opt = st.one_of(st.just(math.nan), st.floats(0.0, 300.0))
    return Fix(
        unit_id="u1", t_us=t_us, recv_us=T0, lat=lat, lon=lon,
        speed_kmh=draw(opt), course=draw(st.one_of(st.just(math.nan), st.floats(0.0, 359.9))),
        quality=draw(st.integers(1, 8)), sats=draw(st.integers(-1, 24)),
        hdop=draw(st.one_of(st.just(math.nan), st.floats(0.1, 50.0))),
        alt_m=draw(st.one_of(st.just(math.nan), st.floats(-400.0, 9000.0))),
        talker=draw(st.sampled_from(TALKERS)),
    )  # fmt: skip


@given(fixes(), st.integers(4, 8), st.booleans(), st.sampled_from([None, "S", "C", "U", "V"]))
def test_round_trip_fix_encode_decode(f: Fix, decimals: int, lower: bool, nav: str | None) -> None:
    payload = encode_rmc(f, decimals=decimals, lower_hex=lower, nav_status=nav) + encode_gga(
        f, decimals=decimals, lower_hex=lower
    )
    r = Decoder().decode(["u1"], [payload], [T0])
    assert r.rejects == [], r.rejects
    (got,) = r.fixes.to_fixes()
    assert got.t_us == f.t_us
    assert abs(got.lat - f.lat) <= 1e-6
    lon_err = abs(got.lon - f.lon)
    assert min(lon_err, 360 - lon_err) <= 1e-6
    assert got.talker == f.talker
    assert got.quality == f.quality
    assert got.sats == f.sats
    for a, b, tol in [
        (got.speed_kmh, f.speed_kmh, 1e-2), (got.course, f.course, 1e-2),
        (got.hdop, f.hdop, 1e-2), (got.alt_m, f.alt_m, 0.06),
    ]:  # fmt: skip
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


@given(st.lists(st.binary(max_size=200), max_size=8))
def test_no_byte_string_makes_the_decoder_raise(payloads: list[bytes]) -> None:
    r = Decoder().decode(["u"] * len(payloads), payloads, [T0] * len(payloads))
    assert accounted(r) == r.counts["sentences"]


def _mutate(data: st.DataObject, s: bytes) -> bytes:
    ops = data.draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 200), st.binary(max_size=4)), max_size=4
        )
    )
    b = bytearray(s)
    for op, pos, blob in ops:
        pos = pos % (len(b) + 1)
        if op == 0:
            b[pos:pos] = blob
        elif op == 1:
            del b[pos : pos + len(blob) + 1]
        elif op == 2 and blob:
            b[pos : pos + len(blob)] = blob
        else:
            b = b[:pos]  # truncation
    return bytes(b)


def _valid_sentences(data: st.DataObject) -> list[bytes]:
    out = []
    for _ in range(data.draw(st.integers(0, 4))):
        f = data.draw(fixes())
        kind = data.draw(
            st.sampled_from(["rmc", "gga", "gns", "vtg", "pair", "gll", "zda", "rtk", "triple"])
        )
        lower = data.draw(st.booleans())
        if kind == "rmc":
            out.append(encode_rmc(f, lower_hex=lower))
        elif kind == "gll":
            out.append(encode_gll(f, lower_hex=lower, mode=data.draw(st.sampled_from([None, "A"]))))
        elif kind == "zda":
            out.append(encode_zda(f.t_us, talker=f.talker, lower_hex=lower))
        elif kind == "rtk":
            dec = data.draw(st.integers(8, 10))
            out.append(encode_rmc(f, decimals=dec) + encode_gga(f, decimals=dec, rtk=True))
        elif kind == "triple":
            out.append(encode_gga(f) + encode_gll(f) + encode_gns(f))
        elif kind == "gga":
            out.append(encode_gga(f, lower_hex=lower))
        elif kind == "gns":
            out.append(encode_gns(f, lower_hex=lower))
        elif kind == "vtg":
            out.append(encode_vtg(f, lower_hex=lower))
        else:
            out.append(encode_rmc(f) + encode_gga(f) + encode_vtg(f))
    return out


@st.composite
def mixtures(draw: st.DrawFn) -> tuple[list[str], list[bytes], list[int]]:
    data = draw(st.data())
    payloads = []
    for _ in range(draw(st.integers(1, 5))):
        parts = _valid_sentences(data)
        parts += draw(st.lists(st.sampled_from(REAL_LIKE), max_size=3))
        parts += [
            _mutate(data, p)
            for p in draw(st.lists(st.sampled_from(REAL_LIKE + parts or [b"$"]), max_size=2))
        ]
        parts += draw(st.lists(st.binary(max_size=30), max_size=2))
        parts = draw(st.permutations(parts))
        sep = draw(st.sampled_from([b"", b"\r\n", b"\n", b"\r"]))
        payloads.append(sep.join(parts))
    units = [draw(st.sampled_from(["a", "b"])) for _ in payloads]
    recv = [T0 + draw(st.integers(-3600, 3600)) * S for _ in payloads]
    return units, payloads, recv


@given(mixtures(), st.booleans(), st.booleans())
def test_vectorised_equals_reference_on_arbitrary_mixtures(
    batch: tuple[list[str], list[bytes], list[int]], require_checksum: bool, live: bool
) -> None:
    options = DecodeOptions(require_checksum=require_checksum, date_from_receive_time=live)
    a = Decoder(options).decode(*batch)
    b = decode_reference(*batch, options)
    assert_same_result(a, b)
    assert accounted(a) == a.counts["sentences"]


@settings(max_examples=30)  # each example is 2-4 batches; the single-batch property runs more
@given(st.lists(mixtures(), min_size=2, max_size=4))
def test_vectorised_equals_reference_across_batches(
    batches: list[tuple[list[str], list[bytes], list[int]]],
) -> None:
    d, ref = Decoder(), ReferenceDecoder()
    for batch in batches:
        assert_same_result(d.decode(*batch), ref.decode(*batch))


@given(st.data())
def test_single_character_corruption_is_rejected_or_vouched_for(data: st.DataObject) -> None:
    f = data.draw(fixes())
    s = encode_rmc(f, lower_hex=data.draw(st.booleans()))
    clean = Decoder().decode(["u1"], [s], [T0]).fixes
    pos = data.draw(st.integers(0, len(s) - 3))  # not the line end
    new = data.draw(st.integers(0, 255).filter(lambda c: c != s[pos]))
    bad = s[:pos] + bytes([new]) + s[pos + 1 :]
    got = Decoder().decode(["u1"], [bad], [T0]).fixes
    # Either nothing comes out, or exactly the fix the intact sentence gives (e.g. the
    # checksum's hex letter changed case: the checksum still vouches for the same bytes).
    assert len(got) == 0 or (
        got.t_us.tolist() == clean.t_us.tolist() and np.array_equal(got.lat, clean.lat)
    )


@st.composite
def epoch_streams(draw: st.DrawFn) -> list[bytes]:
    """Consecutive 1 Hz epochs of one unit, each RMC+GGA(+VTG), as separate byte strings."""
    n = draw(st.integers(1, 12))
    lat0, lon0 = draw(st.floats(-60, 60)), draw(st.floats(-170, 170))
    start = T0 - draw(st.integers(0, 3600)) * S
    out = []
    for i in range(n):
        f = fix(start + i * S, lat=lat0 + i * 1e-4, lon=lon0, talker=draw(st.sampled_from(TALKERS)))
        out.append(encode_rmc(f) + encode_gga(f) + (encode_vtg(f) if draw(st.booleans()) else b""))
    if n > 2 and draw(st.booleans()):
        out.insert(draw(st.integers(0, n)), out[draw(st.integers(0, n - 1))])  # a redelivery
    return out


@given(epoch_streams(), st.data())
def test_chunking_into_payloads_and_batches_gives_the_same_fixes(
    epochs: list[bytes], data: st.DataObject
) -> None:
    whole = Decoder().decode(["u1"], [b"".join(epochs)], [T0])
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(epochs) - 1)), max_size=len(epochs))))
    payloads = [
        b"".join(epochs[a:b]) for a, b in zip([0, *cuts], [*cuts, len(epochs)], strict=True)
    ]
    payloads = [p for p in payloads if p]
    d = Decoder()
    batches = []
    i = 0
    while i < len(payloads):
        k = data.draw(st.integers(1, len(payloads) - i))
        batches.append(d.decode(["u1"] * k, payloads[i : i + k], [T0] * k))
        i += k
    t = np.concatenate([b.fixes.t_us for b in batches])
    lat = np.concatenate([b.fixes.lat for b in batches])
    assert t.tolist() == whole.fixes.t_us.tolist()
    assert np.array_equal(lat, whole.fixes.lat)
    assert sum(len(b.rejects) for b in batches) == len(whole.rejects)


def test_frame_helper_matches_decoder_checksum() -> None:
    assert Decoder().decode(["u"], [frame("GPGSV,1,1,00")], [T0]).counts["skipped:GPGSV"] == 1


@settings(max_examples=50)
@given(st.lists(epoch_streams(), min_size=1, max_size=3), st.data())
def test_vectorised_equals_reference_on_plausible_tracks_out_of_order(
    tracks: list[list[bytes]], data: st.DataObject
) -> None:
    """Realistic motion (the filter's fast path), shuffled (backlog, backwards times), redelivered,
    several units, several batches: the numpy decoder still equals the reference."""
    items = [(f"u{i}", e) for i, epochs in enumerate(tracks) for e in epochs]
    items = data.draw(st.permutations(items))
    d, ref = Decoder(), ReferenceDecoder()
    i = 0
    while i < len(items):
        k = data.draw(st.integers(1, len(items) - i))
        part = items[i : i + k]
        batch = ([u for u, _ in part], [e for _, e in part], [T0] * k)
        assert_same_result(d.decode(*batch), ref.decode(*batch))
        i += k


@st.composite
def jittery_streams(draw: st.DrawFn) -> list[bytes]:
    """A unit whose fixes jump 0-150 m at 1-2 s steps: lone outliers, bursts, re-anchoring and
    the bypass of a lone fix all happen; sometimes a ZDA-dated GGA-only unit."""
    n = draw(st.integers(2, 25))
    t = T0 - draw(st.integers(0, 3600)) * S
    out = []
    for _ in range(n):
        t += draw(st.sampled_from([1, 1, 1, 2])) * S
        d = draw(st.sampled_from([0.0, 3.0, 10.0, 45.0, 70.0, 78.0, 150.0]))
        f = fix(t, lat=48.1 + d / 111_195.0 * draw(st.sampled_from([-1, 1])))
        if draw(st.booleans()):
            out.append(encode_rmc(f))
        else:
            out.append((encode_zda(t) if draw(st.booleans()) else b"") + encode_gga(f))
    return out


@settings(max_examples=60)
@given(st.lists(jittery_streams(), min_size=1, max_size=3), st.data(), st.booleans())
def test_vectorised_equals_reference_on_jumpy_tracks_across_batches(
    tracks: list[list[bytes]], data: st.DataObject, live: bool
) -> None:
    """The filter's scalar rule (bypass of a lone fix, re-anchoring) and its bulk path agree
    across batches, in order or shuffled, and so does dating from remembered anchors."""
    items = [(f"u{i}", e) for i, epochs in enumerate(tracks) for e in epochs]
    if data.draw(st.booleans()):
        items = data.draw(st.permutations(items))
    options = DecodeOptions(date_from_receive_time=live)
    d, ref = Decoder(options), ReferenceDecoder(options)
    i = 0
    while i < len(items):
        k = data.draw(st.integers(1, len(items) - i))
        part = items[i : i + k]
        batch = ([u for u, _ in part], [e for _, e in part], [T0] * k)
        assert_same_result(d.decode(*batch), ref.decode(*batch))
        i += k
