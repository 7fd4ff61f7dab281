"""The stages after parsing, shared by both decoders: epochs, per-unit filter, result."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from ingest.nmea.epochs import build_candidates
from ingest.nmea.filters import FixFilter, Verdict
from ingest.nmea.options import DecodeOptions
from ingest.nmea.rejects import DecodeResult, RejectReason, SentenceReject
from ingest.nmea.sentences import NMEA_STANDARD_CHARS, ParseOutput

#: A refused sentence is kept up to this many bytes (a too-long one can be a whole payload).
MAX_KEPT_SENTENCE_BYTES = 256
#: Reject records kept per payload (all are counted): a payload of garbage cannot make the
#: decoder build a million records for the dead-letter table.
MAX_REJECT_RECORDS_PER_PAYLOAD = 100


def check_inputs(
    unit_ids: Sequence[str],
    payloads: Sequence[bytes],
    recv_us: Sequence[int] | npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """The receive times as an array, after checking there is one of everything per payload."""
    if not len(unit_ids) == len(payloads) == len(recv_us):
        raise ValueError(
            f"unit_ids, payloads and recv_us must have one entry per payload; got "
            f"{len(unit_ids)}, {len(payloads)}, {len(recv_us)}"
        )
    return np.asarray(recv_us, dtype=np.int64).reshape(-1)


def unit_array(unit_ids: Sequence[str]) -> npt.NDArray[np.str_]:
    """The unit ids as one numpy string column (the width of the longest, at least 1)."""
    return np.asarray(unit_ids, dtype=np.str_) if len(unit_ids) else np.empty(0, dtype=np.str_)


def finish(
    po: ParseOutput,
    unit_ids: Sequence[str],
    recv: npt.NDArray[np.int64],
    options: DecodeOptions,
    fix_filter: FixFilter,
    *,
    scalar: bool,
) -> tuple[DecodeResult, int]:
    """Result of one batch, and the number of rows the filter decided one by one."""
    pcodes = fix_filter.codes(unit_ids)
    ep = build_candidates(po.rows, recv, pcodes, options, fix_filter)
    c = ep.candidates
    odd: list[tuple[int, Verdict]]
    if scalar:
        cu = unit_array(unit_ids)[c.payload]
        t_out = c.t_us.copy()
        odd = []
        verdicts = fix_filter.admit_each(
            cu.tolist(), c.t_us.tolist(), c.lat.tolist(), c.lon.tolist()
        )
        for r, v in enumerate(verdicts):
            t_out[r] = v.t_us
            if v.reason is not None or v.restamped or v.reanchored or v.bypassed:
                odd.append((r, v))
        slow = len(c.t_us)
    else:
        # unit column from the filter's names by code: no string conversion of every payload's id
        codes = pcodes[c.payload]
        if isinstance(unit_ids, np.ndarray) or not len(unit_ids):
            cu = unit_array(unit_ids)[c.payload]
        else:
            cu = fix_filter.names(codes, max(1, max(map(len, unit_ids))))
        t_out, odd, slow = fix_filter.admit_batch(codes, c.t_us, c.lat, c.lon)
    keep = np.ones(len(t_out), dtype=bool)
    rej = list(po.rejects) + ep.rejects
    counts: dict[str, int] = {"sentences": len(po.starts), "merged": ep.merged}
    if ep.dating:
        counts["dating"] = ep.dating
    restamped = reanchored = bypassed = 0
    for r, v in odd:
        if v.reason is not None:
            keep[r] = False
            rej.append((int(c.seq[r]), v.reason, v.detail))
        restamped += v.restamped
        reanchored += v.reanchored
        bypassed += v.bypassed
    # read sentences longer than NMEA's 82 characters (RTK receivers): a note, not a reject
    seq = po.rows.seq
    long_rows = int(np.count_nonzero(po.ends[seq] - po.starts[seq] > NMEA_STANDARD_CHARS))
    sel = slice(None) if keep.all() else keep  # the common case: no copies
    fixes = FixBatch(
        unit_id=cu[sel],
        t_us=t_out[sel],
        recv_us=recv[c.payload][sel],
        lat=c.lat[sel],
        lon=c.lon[sel],
        speed_kmh=c.speed_kmh[sel].astype(np.float32),
        course=c.course[sel].astype(np.float32),
        quality=c.quality[sel],
        sats=c.sats[sel],
        hdop=c.hdop[sel].astype(np.float32),
        alt_m=c.alt_m[sel].astype(np.float32),
        talker=c.talker[sel],
    )
    rej.sort(key=lambda x: x[0])
    by_reason: dict[RejectReason, int] = {}
    rejects = []
    kept_per_payload: dict[int, int] = {}
    not_kept = 0
    # per-reject lookups as Python lists, once (numpy scalar indexing costs ~1 µs a call)
    seqs = np.fromiter((x[0] for x in rej), dtype=np.int64, count=len(rej))
    pays = po.payload_of[seqs].tolist()
    s0 = (po.starts[seqs] + po.base).tolist()
    s1 = (po.ends[seqs] + po.base).tolist()
    recv_l = recv[po.payload_of[seqs]].tolist()
    for k, (_, reason, detail) in enumerate(rej):
        by_reason[reason] = by_reason.get(reason, 0) + 1  # (enum .value costs ~1 µs a call)
        p = pays[k]
        kept = kept_per_payload.get(p, 0)
        if kept >= MAX_REJECT_RECORDS_PER_PAYLOAD:
            not_kept += 1
            continue
        kept_per_payload[p] = kept + 1
        rejects.append(
            SentenceReject(
                payload_index=p,
                unit_id=str(unit_ids[p]),
                reason=reason,
                detail=detail,
                sentence=po.buffer[s0[k] : min(s1[k], s0[k] + MAX_KEPT_SENTENCE_BYTES)],
                recv_us=recv_l[k],
            )
        )
    counts["accepted"] = len(fixes)
    for key, n in sorted({**po.skipped, **ep.unpaired_vtg}.items()):
        counts[f"skipped:{key}"] = counts.get(f"skipped:{key}", 0) + n
    for reason in RejectReason:
        if reason in by_reason:
            counts[f"reject:{reason.value}"] = by_reason[reason]
    for key, n in (
        ("corrected:week_rollover", ep.corrected_rollover),
        ("restamped:leap_repeat", restamped),
        ("reanchored", reanchored),
        ("bypassed_lone_fix", bypassed),
        ("long_sentence", long_rows),
        ("rejects_not_kept", not_kept),
    ):
        if n:
            counts[key] = n
    return DecodeResult(fixes=fixes, rejects=rejects, counts=counts), slow
