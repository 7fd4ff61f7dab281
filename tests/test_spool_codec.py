"""The spool's record body round-trips a decoded batch exactly, and refuses garbage loudly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.fixes import FIX_COLUMNS, DeadLetter, Fix, FixBatch
from store.spool_codec import FIXED_BYTES_PER_FIX, SpoolRecordCorrupt, decode_batch, encode_batch

# numpy unicode arrays cannot hold a trailing NUL or lone surrogates; anything else goes
_np_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
# dead letters are Python strings: anything a decoder may produce, surrogates included
_any_text = st.text(max_size=40)


@st.composite
def fix_batches(draw: st.DrawFn) -> FixBatch:
    n = draw(st.integers(0, 40))
    cols: dict[str, Any] = {}
    for name, dtype in FIX_COLUMNS.items():
        if np.dtype(dtype).kind == "U":
            values = draw(st.lists(_np_text, min_size=n, max_size=n))
            cols[name] = np.array(values, dtype=np.str_) if n else np.empty(0, dtype=np.str_)
        else:  # every value, NaN, ±inf, -1 and the extremes included
            cols[name] = draw(hnp.arrays(np.dtype(dtype), n))
    return FixBatch(**cols)


dead_letters = st.lists(
    st.builds(
        DeadLetter,
        topic=_any_text,
        unit_id=st.none() | _any_text,
        reason=_any_text,
        detail=_any_text,
        payload=st.binary(max_size=100),
        recv_us=st.integers(-(2**63), 2**63 - 1),
        source=st.binary(max_size=20),
    ),
    max_size=5,
)


def assert_same_batch(a: FixBatch, b: FixBatch) -> None:
    for name in FIX_COLUMNS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "U":
            assert x.tolist() == y.tolist(), name
        else:  # bit for bit: NaN payloads and -0.0 too
            assert x.tobytes() == y.tobytes(), name
        assert y.flags.writeable, "decoded columns are ordinary arrays, not views of the record"


@given(fix_batches(), dead_letters)
def test_any_batch_round_trips_exactly(fixes: FixBatch, dead: list[DeadLetter]) -> None:
    got_fixes, got_dead = decode_batch(encode_batch(fixes, dead))
    assert_same_batch(fixes, got_fixes)
    assert got_dead == dead


def test_unknown_values_stay_nan_and_minus_one() -> None:
    fix = Fix(unit_id="U1", t_us=10, recv_us=11, lat=1.5, lon=-2.5)  # GGA/RMC fields unknown
    got = decode_batch(encode_batch(FixBatch.from_fixes([fix]), []))[0].to_fixes()[0]
    assert got.quality == got.sats == -1
    assert all(v != v for v in (got.speed_kmh, got.course, got.hdop, got.alt_m))


def test_a_fix_costs_about_58_bytes() -> None:
    fixes = FixBatch.from_fixes(
        Fix(unit_id=f"U{i % 100:04d}", t_us=i, recv_us=i, lat=1.0, lon=2.0) for i in range(2000)
    )
    per_fix = len(encode_batch(fixes, [])) / 2000
    assert FIXED_BYTES_PER_FIX == 58
    assert 58 <= per_fix < 60  # plus the dictionary of 100 unit ids


@given(fix_batches(), dead_letters, st.data())
def test_a_truncated_body_is_refused_never_misread(
    fixes: FixBatch, dead: list[DeadLetter], data: st.DataObject
) -> None:
    body = encode_batch(fixes, dead)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(SpoolRecordCorrupt):
        decode_batch(body[:cut])


def test_bad_magic_and_trailing_bytes_are_refused() -> None:
    body = encode_batch(FixBatch.empty(), [])
    with pytest.raises(SpoolRecordCorrupt, match="starts with"):
        decode_batch(b"XXXX" + body[4:])
    with pytest.raises(SpoolRecordCorrupt, match="trailing"):
        decode_batch(body + b"\x00")
