"""The production decoder: compiled parse, shared epochs, batch filter; state = per-unit history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from ingest.nmea.compiled import parse_compiled
from ingest.nmea.filters import FixFilter
from ingest.nmea.options import DecodeOptions
from ingest.nmea.pipeline import check_inputs, finish
from ingest.nmea.rejects import DecodeResult


@dataclass(frozen=True, slots=True, kw_only=True)
class DecoderStatistics:
    """How often the fast paths had to hand rows to the scalar code (for metrics)."""

    batches: int
    sentences: int
    parse_fallback_rows: int
    filter_scalar_rows: int
    units_tracked: int


class Decoder:
    """Sans-I/O: bytes and receive times in, :class:`DecodeResult` out, one call per batch.

    Stateful only through the per-unit filter (duplicates and jumps across batches), bounded by
    ``options.history_per_unit`` fixes per unit.
    """

    def __init__(self, options: DecodeOptions = DecodeOptions()) -> None:  # noqa: B008
        self.options = options
        self._filter = FixFilter(options)
        self._batches = self._sentences = self._fallback = self._slow = 0

    def decode(
        self,
        unit_ids: Sequence[str],
        payloads: Sequence[bytes],
        recv_us: Sequence[int] | npt.NDArray[np.int64],
    ) -> DecodeResult:
        recv = check_inputs(unit_ids, payloads, recv_us)
        po = parse_compiled(payloads, self.options)
        result, slow = finish(po, unit_ids, recv, self.options, self._filter, scalar=False)
        self._batches += 1
        self._sentences += len(po.starts)
        self._fallback += po.fallback_rows
        self._slow += slow
        return result

    def seed(self, fixes: FixBatch) -> int:
        """Start each unit without history from its newest stored fix (a restart: see
        :meth:`FixFilter.seed`); fixes at or before it are decided as without it.  Returns
        the number of units seeded."""
        return self._filter.seed(fixes.unit_id.tolist(), fixes.t_us, fixes.lat, fixes.lon)

    def statistics(self) -> DecoderStatistics:
        return DecoderStatistics(
            batches=self._batches,
            sentences=self._sentences,
            parse_fallback_rows=self._fallback,
            filter_scalar_rows=self._slow,
            units_tracked=len(self._filter),
        )
