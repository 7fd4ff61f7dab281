"""Placeholder: numpy parser (being written)."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.nmea.options import DecodeOptions
from ingest.nmea.reference import parse_reference
from ingest.nmea.sentences import ParseOutput


def parse_vectorised(payloads: Sequence[bytes], options: DecodeOptions) -> ParseOutput:
    return parse_reference(payloads, options)
