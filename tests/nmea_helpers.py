"""Shared helpers for the tests/test_nmea_*.py files (not a test module)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from core.fixes import FIX_COLUMNS, Fix, datetime_to_us
from ingest.nmea import DecodeResult
from ingest.nmea_encode import frame

T0 = datetime_to_us(dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC))
S = 1_000_000


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return datetime_to_us(dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC))


def fix(t_us: int = T0, lat: float = 48.1, lon: float = 11.5, **kw: object) -> Fix:
    base: dict[str, object] = dict(
        unit_id="u1", t_us=t_us, recv_us=t_us, lat=lat, lon=lon, speed_kmh=36.0, course=90.0,
        quality=1, sats=8, hdop=0.9, alt_m=500.0, talker="GP",
    )  # fmt: skip
    base.update(kw)
    return Fix(**base)  # type: ignore[arg-type]


def sentence(body: str) -> bytes:
    """A framed sentence with the right checksum (for hand-written test sentences)."""
    return frame(body)


def reasons(result: DecodeResult) -> list[str]:
    return [r.reason.value for r in result.rejects]


def assert_same_result(a: DecodeResult, b: DecodeResult) -> None:
    """Bit-identical decode results (NaN equal to NaN)."""
    assert a.counts == b.counts
    assert a.rejects == b.rejects
    assert len(a.fixes) == len(b.fixes)
    for name in FIX_COLUMNS:
        x, y = getattr(a.fixes, name), getattr(b.fixes, name)
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


def accounted(result: DecodeResult) -> int:
    """Sentences accounted for by the result: every framed sentence exactly once."""
    c = result.counts
    return (
        c["accepted"]
        + c["merged"]
        + c.get("dating", 0)
        + sum(v for k, v in c.items() if k.startswith(("skipped:", "reject:")))
    )
