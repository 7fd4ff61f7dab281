"""The scalar reference decoder: one sentence at a time, in plain Python.

It is the specification the numpy decoder is tested against (identical results), and the
baseline "plain per-line parser" of benchmarks/bench_decode.py.  Its parse stage is scalar;
epochs and validation (epochs.py) are shared; its filter runs ``FixFilter.admit`` per fix.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from ingest.nmea.fields import Refuse, Row, Skip, parse_sentence
from ingest.nmea.filters import FixFilter
from ingest.nmea.options import DecodeOptions
from ingest.nmea.pipeline import check_inputs, finish
from ingest.nmea.rejects import DecodeResult, RejectReason
from ingest.nmea.sentences import ROW_DTYPES, ParsedRows, ParseOutput

#: A sentence runs from '$' to the next CR, LF or '$' (re-synchronisation after truncation).
FRAME = re.compile(rb"\$[^\r\n$]*")


def join_payloads(payloads: Sequence[bytes]) -> tuple[bytes, npt.NDArray[np.int64]]:
    """Payloads joined by ``\\n`` (so no sentence spans two) and each payload's start offset."""
    lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
    offsets = np.zeros(len(payloads), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=offsets[1:])
    return b"\n".join(payloads) + b"\n", offsets


def parse_reference(payloads: Sequence[bytes], options: DecodeOptions) -> ParseOutput:
    buf, offsets = join_payloads(payloads)
    offset_list = offsets.tolist()
    starts: list[int] = []
    ends: list[int] = []
    pays: list[int] = []
    cols: dict[str, list[float | int]] = {name: [] for name in ROW_DTYPES}
    rejects: list[tuple[int, RejectReason, str]] = []
    skipped: dict[str, int] = {}
    for seq, m in enumerate(FRAME.finditer(buf)):
        s, e = m.span()
        p = bisect_right(offset_list, s) - 1
        starts.append(s)
        ends.append(e)
        pays.append(p)
        r = parse_sentence(m.group(), options.require_checksum)
        if isinstance(r, Row):
            cols["seq"].append(seq)
            cols["payload"].append(p)
            for name in Row.__slots__:
                cols[name].append(getattr(r, name))
        elif isinstance(r, Skip):
            skipped[r.address] = skipped.get(r.address, 0) + 1
        else:
            assert isinstance(r, Refuse)
            rejects.append((seq, r.reason, r.detail))
    rows = ParsedRows(
        **{name: np.array(cols[name], dtype=dtype) for name, dtype in ROW_DTYPES.items()}
    )
    return ParseOutput(
        buffer=buf,
        starts=np.array(starts, dtype=np.int64),
        ends=np.array(ends, dtype=np.int64),
        payload_of=np.array(pays, dtype=np.int64),
        rows=rows,
        rejects=rejects,
        skipped=skipped,
    )


class ReferenceDecoder:
    """The scalar decoder with per-unit state across batches (for multi-batch comparisons)."""

    def __init__(self, options: DecodeOptions = DecodeOptions()) -> None:  # noqa: B008
        self.options = options
        self._filter = FixFilter(options)

    def decode(
        self,
        unit_ids: Sequence[str],
        payloads: Sequence[bytes],
        recv_us: Sequence[int] | npt.NDArray[np.int64],
    ) -> DecodeResult:
        recv = check_inputs(unit_ids, payloads, recv_us)
        po = parse_reference(payloads, self.options)
        result, _ = finish(po, unit_ids, recv, self.options, self._filter, scalar=True)
        return result

    def seed(self, fixes: FixBatch) -> int:
        """Start each unit without history from its newest stored fix (a restart: see
        :meth:`FixFilter.seed`); fixes at or before it are decided as without it.  Returns
        the number of units seeded."""
        return self._filter.seed(fixes.unit_id.tolist(), fixes.t_us, fixes.lat, fixes.lon)


def decode_reference(
    unit_ids: Sequence[str],
    payloads: Sequence[bytes],
    recv_us: Sequence[int] | npt.NDArray[np.int64],
    options: DecodeOptions = DecodeOptions(),  # noqa: B008
) -> DecodeResult:
    """One batch through a fresh :class:`ReferenceDecoder` (no history from earlier batches)."""
    return ReferenceDecoder(options).decode(unit_ids, payloads, recv_us)
