"""NMEA 0183 decoding (sans-I/O): MQTT payload bytes -> validated fixes as columns.

``Decoder`` is the batch decoder used in production (compiled parse, numpy stages after it);
``decode_reference`` the scalar specification it is tested against.  The rules (reject codes,
real-receiver faults) are in docs/nmea.md.
"""

from ingest.nmea.compiled import warm_up
from ingest.nmea.decoder import Decoder, DecoderStatistics
from ingest.nmea.options import DecodeOptions
from ingest.nmea.reference import ReferenceDecoder, decode_reference
from ingest.nmea.rejects import DecodeResult, RejectReason, SentenceReject

__all__ = [
    "DecodeOptions",
    "DecodeResult",
    "Decoder",
    "DecoderStatistics",
    "ReferenceDecoder",
    "RejectReason",
    "SentenceReject",
    "decode_reference",
    "warm_up",
]
