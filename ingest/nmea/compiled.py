"""The production parse stage: the compiled kernel over the batch, the scalar parser for the rest.

kernel.scan classifies every sentence in one pass and fills the rows it can prove clean; this
module joins the payloads, hands the sentences it did not decide (rejects that need a reason and
a detail, odd layouts, sentences without checksum when allowed) to fields.parse_sentence one by
one, and assembles the same :class:`ParseOutput` as parse_reference.  On the fleet's traffic
the scalar share is the rare void fix or corrupt sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ingest.nmea import kernel
from ingest.nmea.fields import MISSING_CHECKSUM_DETAIL, Refuse, Row, Skip, too_long_detail
from ingest.nmea.fields import parse_sentence as _parse_sentence
from ingest.nmea.options import DecodeOptions
from ingest.nmea.rejects import RejectReason
from ingest.nmea.sentences import ROW_DTYPES, ParsedRows, ParseOutput

#: Row columns in the order kernel.scan returns them after its seven per-sentence arrays.
_ROW_COLUMNS = (
    "tod_us", "date_days", "lat", "lon", "speed_kmh", "course", "quality", "sats", "hdop",
    "alt_m",
)  # fmt: skip


def join(payloads: Sequence[bytes]) -> tuple[bytes, npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Payloads joined and terminated by ``\\n`` (no sentence spans two), as bytes and as a
    uint8 view, and each payload's start offset."""
    raw = b"\n".join(payloads) + b"\n"
    lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
    offsets = np.zeros(len(payloads), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=offsets[1:])
    return raw, np.frombuffer(raw, dtype=np.uint8), offsets


def parse_compiled(payloads: Sequence[bytes], options: DecodeOptions) -> ParseOutput:
    raw, buf, offsets = join(payloads)
    out = kernel.scan(buf, offsets, options.require_checksum)
    starts, ends, payload, status, talker, kind, addr = out[:7]
    cols = dict(zip(_ROW_COLUMNS, out[7:], strict=True))

    rejects: list[tuple[int, RejectReason, str]] = []
    skipped: dict[str, int] = {}
    if len(status) and int(status.max()) > kernel.ROW:
        si = np.flatnonzero(status == kernel.SKIP)
        if len(si):
            keys, cnt = np.unique(addr[si], return_counts=True)
            for key, c in zip(keys.tolist(), cnt.tolist(), strict=True):
                if key:
                    skipped[key.to_bytes(8, "little").rstrip(b"\0").decode()] = c
            for seq in si[addr[si] == 0].tolist():  # addresses of 9-15 characters
                head = raw[int(starts[seq]) + 1 : int(ends[seq])].split(b",")[0].split(b"*")[0]
                skipped[head.decode()] = skipped.get(head.decode(), 0) + 1
        for seq in np.flatnonzero(status == kernel.TOO_LONG).tolist():
            rejects.append(
                (seq, RejectReason.TOO_LONG, too_long_detail(int(ends[seq] - starts[seq])))
            )
        rejects.extend(
            (seq, RejectReason.MISSING_CHECKSUM, MISSING_CHECKSUM_DETAIL)
            for seq in np.flatnonzero(status == kernel.MISSING_CHECKSUM).tolist()
        )
        fallback = np.flatnonzero(status == kernel.FALLBACK)
    else:
        fallback = np.empty(0, dtype=np.int64)

    # Rows decided by the scalar parser are written into the kernel's columns in place, so the
    # table stays in sentence order without a merge.
    is_row = status == kernel.ROW
    for seq in fallback.tolist():
        res = _parse_sentence(raw[int(starts[seq]) : int(ends[seq])], options.require_checksum)
        if isinstance(res, Row):
            is_row[seq] = True
            kind[seq], talker[seq] = res.kind, res.talker
            for name in _ROW_COLUMNS:
                cols[name][seq] = getattr(res, name)
        elif isinstance(res, Skip):
            skipped[res.address] = skipped.get(res.address, 0) + 1
        else:
            assert isinstance(res, Refuse)
            rejects.append((seq, res.reason, res.detail))

    rejects.sort(key=lambda r: r[0])  # sentence order, as parse_reference gives them
    seq_all = np.flatnonzero(is_row)
    every = len(seq_all) == len(status)
    table = {
        "seq": seq_all,
        "payload": payload if every else payload[seq_all],
        "kind": kind if every else kind[seq_all],
        "talker": talker if every else talker[seq_all],
        **{name: c if every else c[seq_all] for name, c in cols.items()},
    }
    rows = ParsedRows(
        **{name: np.asarray(table[name], dtype=dt) for name, dt in ROW_DTYPES.items()}
    )
    return ParseOutput(
        buffer=raw,
        starts=starts,
        ends=ends,
        payload_of=payload,
        rows=rows,
        rejects=rejects,
        skipped=skipped,
        fallback_rows=len(fallback),
    )


_WARM_UP_PAYLOAD = b"$GPRMC,165744,A,4901.5940,N,01203.9163,E,0.0,131.9,110410,1.6,E,A*1F\r\n"


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache).

    A cold compile takes ~4 s; done by the first live batch it would stall the event loop that
    also keeps the MQTT connection alive.  The service calls this in a worker thread at start.
    """
    parse_compiled([_WARM_UP_PAYLOAD], DecodeOptions())
