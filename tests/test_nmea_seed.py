"""Seeding the decoder's per-unit filter at start (FixFilter.seed, Decoder.seed,
ReferenceDecoder.seed): after a restart each unit's first new fix is judged against the newest
fix the store holds for it, while redeliveries at or before that fix are decided exactly as
without a seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixes import FixBatch
from ingest.nmea import DecodeOptions, Decoder, DecodeResult, ReferenceDecoder
from ingest.nmea.filters import FixFilter
from ingest.nmea_encode import encode_gga, encode_rmc, encode_zda
from tests.nmea_helpers import T0, S, assert_same_result, fix, reasons

KM = 1 / 111.195  # degrees of latitude per km


def seeds(units: list[str], t_us: list[int], lat: list[float], lon: list[float]) -> FixBatch:
    n = len(units)
    return FixBatch(
        unit_id=np.array(units, dtype=np.str_), t_us=np.array(t_us, dtype=np.int64),
        recv_us=np.array(t_us, dtype=np.int64), lat=np.array(lat), lon=np.array(lon),
        speed_kmh=np.zeros(n, np.float32), course=np.zeros(n, np.float32),
        quality=np.ones(n, np.int16), sats=np.full(n, 8, np.int16),
        hdop=np.ones(n, np.float32), alt_m=np.zeros(n, np.float32),
        talker=np.array(["GP"] * n, dtype=np.str_),
    )  # fmt: skip


@st.composite
def jittery(draw: st.DrawFn) -> tuple[list[bytes], int]:
    """A unit's fixes jumping 0-150 m at 1-2 s steps (outliers, re-anchoring, bypass all
    happen; sometimes GGA-only with ZDA), and the newest fix time in it."""
    n = draw(st.integers(1, 20))
    t = T0 - draw(st.integers(0, 3600)) * S
    out, newest = [], t
    for _ in range(n):
        t += draw(st.sampled_from([1, 1, 1, 2, -3])) * S  # backwards now and then (a backlog)
        newest = max(newest, t)
        d = draw(st.sampled_from([0.0, 3.0, 10.0, 45.0, 70.0, 150.0, 20_000.0]))
        f = fix(t, lat=48.1 + d / 111_195.0 * draw(st.sampled_from([-1, 1])))
        if draw(st.booleans()):
            out.append(encode_rmc(f))
        else:
            out.append((encode_zda(t) if draw(st.booleans()) else b"") + encode_gga(f))
        if draw(st.integers(0, 5)) == 0:
            out.append(out[draw(st.integers(0, len(out) - 1))])  # a redelivery
    return out, newest


def decode_in_batches(
    decoder: Decoder | ReferenceDecoder, items: list[tuple[str, bytes]], sizes: list[int]
) -> list[DecodeResult]:
    out, i, k = [], 0, 0
    while i < len(items):
        n = max(1, sizes[k % len(sizes)] if sizes else len(items))
        part = items[i : i + n]
        out.append(decoder.decode([u for u, _ in part], [e for _, e in part], [T0] * len(part)))
        i, k = i + n, k + 1
    return out


@settings(max_examples=80)
@given(
    st.lists(jittery(), min_size=1, max_size=3),
    st.data(),
    st.lists(st.integers(1, 6), max_size=5),
)
def test_redeliveries_at_or_before_the_seed_are_decided_as_without_it(
    tracks: list[tuple[list[bytes], int]], data: st.DataObject, sizes: list[int]
) -> None:
    """The broker's backlog after a crash: every fix at or before the seed's time (the seed at
    exactly the newest fix's time, or later; at its place or 20 km away) gets the same verdict,
    time and reject detail as from an unseeded decoder — numpy and reference decoders."""
    items = [(f"u{i}", e) for i, (epochs, _) in enumerate(tracks) for e in epochs]
    items = data.draw(st.permutations(items))
    units, times, lats = [], [], []
    for i, (_, newest) in enumerate(tracks):
        units.append(f"u{i}")
        times.append(newest + data.draw(st.sampled_from([0, 0, 1, 90 * S])))
        lats.append(48.1 + data.draw(st.sampled_from([0.0, 20.0])) * KM)
    seed = seeds(units, times, lats, [11.5] * len(units))
    plain = decode_in_batches(Decoder(), items, sizes)
    seeded_np, seeded_ref = Decoder(), ReferenceDecoder()
    assert seeded_np.seed(seed) == seeded_ref.seed(seed) == len(units)
    for a, b, c in zip(plain, decode_in_batches(seeded_np, items, sizes),
                       decode_in_batches(seeded_ref, items, sizes), strict=True):  # fmt: skip
        assert_same_result(a, b)
        assert_same_result(a, c)


@settings(max_examples=60)
@given(st.lists(jittery(), min_size=1, max_size=3), st.data(), st.lists(st.integers(1, 6)))
def test_seeded_numpy_decoder_equals_the_seeded_reference(
    tracks: list[tuple[list[bytes], int]], data: st.DataObject, sizes: list[int]
) -> None:
    """Seeds anywhere in time (before, inside or after a unit's fixes): the bulk path and the
    scalar rule still agree, batch after batch."""
    items = [(f"u{i}", e) for i, (epochs, _) in enumerate(tracks) for e in epochs]
    items = data.draw(st.permutations(items))
    units = [f"u{i}" for i in range(len(tracks))]
    times = [T0 + data.draw(st.integers(-3700, 60)) * S for _ in units]
    lats = [48.1 + data.draw(st.sampled_from([0.0, 0.05, 20.0])) * KM for _ in units]
    seed = seeds(units, times, lats, [11.5] * len(units))
    a, b = Decoder(), ReferenceDecoder()
    a.seed(seed)
    b.seed(seed)
    for x, y in zip(decode_in_batches(a, items, sizes), decode_in_batches(b, items, sizes),
                    strict=True):  # fmt: skip
        assert_same_result(x, y)


@pytest.mark.parametrize("make", [Decoder, ReferenceDecoder])
def test_an_outlier_right_after_a_restart_is_refused_against_the_seed(
    make: type[Decoder] | type[ReferenceDecoder],
) -> None:
    outlier = encode_rmc(fix(T0 + 5 * S, lat=48.1 + 10 * KM))
    genuine = encode_rmc(fix(T0 + 6 * S, lat=48.1 + 0.01 * KM))
    cold = make()
    assert reasons(cold.decode(["u1"], [outlier], [T0 + 5 * S])) == []  # nothing to judge by
    warm = make()
    assert warm.seed(seeds(["u1"], [T0], [48.1], [11.5])) == 1
    got = warm.decode(["u1", "u1"], [outlier, genuine], [T0 + 5 * S, T0 + 6 * S])
    assert reasons(got) == ["implausible_jump"]
    assert got.fixes.t_us.tolist() == [T0 + 6 * S]
    assert "from the fix at 2026-11-23T08:00:00" in got.rejects[0].detail


def test_the_seed_joins_the_history_at_the_first_newer_fix_only() -> None:
    f = FixFilter(DecodeOptions())
    assert f.seed(["u1"], [T0], [48.1], [11.5]) == 1
    assert f.history("u1") == []
    # a redelivery of the stored fix itself, then an older one: decided without the seed
    assert f.admit("u1", T0, 48.1, 11.5).reason is None
    assert f.admit("u1", T0 - 5 * S, 48.1 + 30 * KM, 11.5).reason is not None  # from T0's fix
    assert f.history("u1") == [T0]  # the seed did not come in twice
    g = FixFilter(DecodeOptions())
    g.seed(["u1"], [T0], [48.1], [11.5])
    assert g.admit("u1", T0 - 5 * S, 48.1 + 30 * KM, 11.5).reason is None  # as unseeded
    assert g.admit("u1", T0 + S, 48.1 + 30 * KM + 0.001 * KM, 11.5).reason is not None
    assert g.history("u1") == [T0 - 5 * S, T0]  # the seed joined; the jump was refused


def test_seed_keeps_known_units_and_the_newest_of_duplicates() -> None:
    f = FixFilter(DecodeOptions())
    f.admit("known", T0, 48.1, 11.5)
    n = f.seed(["known", "new", "new", "new"], [T0 + S, T0 + 9 * S, T0 + 3 * S, T0 + 2 * S],
               [1.0, 48.1, 2.0, 3.0], [1.0, 11.5, 2.0, 3.0])  # fmt: skip
    assert n == 1
    assert f.admit("known", T0 + 2 * S, 48.1, 11.5).reason is None  # its own history, no seed
    assert f.admit("new", T0 + 10 * S, 48.1, 11.5).reason is None  # from the T0+9 s seed
    assert f.history("new") == [T0 + 9 * S, T0 + 10 * S]
    with pytest.raises(ValueError, match="one time and position per unit"):
        f.seed(["a", "b"], [T0], [1.0], [1.0])
