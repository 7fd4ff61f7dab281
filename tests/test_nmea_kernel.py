"""The compiled parse stage (kernel.scan + compiled.parse_compiled) against the scalar parser.

The decoder-level properties (test_nmea_properties.py) compare whole results; these compare
the parse stage itself, on inputs aimed at the kernel's own code: sentences with a *valid*
checksum whose fields are random (so every field check of the kernel is exercised, not just the
checksum), binary bytes, the 82-character limit, empty fields, long addresses, huge payloads.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.nmea import DecodeOptions, Decoder
from ingest.nmea.compiled import parse_compiled
from ingest.nmea.reference import parse_reference
from ingest.nmea.sentences import MAX_SENTENCE_CHARS, ROW_DTYPES, ParseOutput, talker_code
from ingest.nmea_encode import frame
from tests.nmea_helpers import T0, accounted

STRICT = DecodeOptions()
LAX = DecodeOptions(require_checksum=False)


def assert_same_parse(a: ParseOutput, b: ParseOutput) -> None:
    """Identical parse outputs: framing, rows bit for bit (NaN == NaN), rejects, skips."""
    assert a.buffer[a.base :] == b.buffer[b.base :]
    assert np.array_equal(a.starts, b.starts)
    assert np.array_equal(a.ends, b.ends)
    assert np.array_equal(a.payload_of, b.payload_of)
    for name, dtype in ROW_DTYPES.items():
        x, y = getattr(a.rows, name), getattr(b.rows, name)
        assert x.dtype == np.dtype(dtype) == y.dtype, name
        # floats as bit patterns: -0.0 vs 0.0 or a last-bit difference must fail
        bits = np.int64 if x.dtype.kind == "f" else x.dtype
        assert np.array_equal(x.view(bits), y.view(bits)), name
    assert a.rejects == b.rejects
    assert a.skipped == b.skipped


def both(payloads: list[bytes], options: DecodeOptions = STRICT) -> ParseOutput:
    got = parse_compiled(payloads, options)
    assert_same_parse(got, parse_reference(payloads, options))
    return got


# Field values that are valid, nearly valid, or wrong in the ways fields.py distinguishes.
NUMBERS = st.sampled_from(
    [
        "", "0", "00", "5", "12", "123", "1234", "-1", "-0", "-", ".", "1.", ".5", "1.2.3",
        "4810.8509", "04810.8509", "01133.9095", "4860.0000", "0.0", "9999999.99999999",
        "1234567890123456", "123456789012345", "12345678901234.5", "1e5", "+5", " 5", "5 ",
        "123519", "123519.00", "235960", "235960.5", "240000", "126000", "123519.1234567",
        "230394", "290224", "290223", "310499", "311399", "010100", "000000", "0NaN",
        "-123519", "-4807.038", "-230394", "-08", "1.5", "12.5", "123.45",
        "4807.0381234567", "01131.0001234567", "4807.03812345678", "2024", "1980", "99999",
        "31", "02", "13", "1", "00",
    ]
)  # fmt: skip
CHARS = st.sampled_from(
    ["", "A", "V", "N", "S", "E", "W", "D", "M", "P", "R", "F", "X", "AA",
     "0", "1", "8", "9", "AN", "NA", "NN", "ADPRFEMS", "ADPRFEMSA", "n"]
)  # fmt: skip
FIELD = st.one_of(NUMBERS, CHARS, st.text(alphabet="0123456789.-AN", max_size=6))
ADDRESS = st.one_of(
    st.sampled_from(["GPRMC", "GNRMC", "GPGGA", "GLGGA", "GNGNS", "GPVTG", "BDGGA", "QZRMC",
                     "GPGSV", "PGRME", "P", "PX", "GPRMCX", "gpRMC", "XXGGA", "GNGGA",
                     "INRMC", "IIGGA", "GPGLL", "GNZDA", "U1GNS", "ECGLL", "PSRFEPE", "PXRMC",
                     "P1GGA", "PGLL", "GPZDA", "INVTG", "pXRMC", "G", "GPGL"]),
    st.text(alphabet="ABCGMNPRSTVZ0123456789", min_size=0, max_size=17),
)  # fmt: skip


@st.composite
def checksummed(draw: st.DrawFn) -> bytes:
    """A sentence with a right checksum, a plausible address and random fields."""
    n = draw(st.integers(0, 16))
    body = ",".join([draw(ADDRESS), *(draw(FIELD) for _ in range(n))])
    return frame(
        body, lower_hex=draw(st.booleans()), eol=draw(st.sampled_from([b"\r\n", b"\n", b"\r", b""]))
    )


@st.composite
def shaped(draw: st.DrawFn) -> bytes:
    """A supported sentence of an accepted field count with each field valid or perturbed."""
    kind = draw(st.sampled_from(["RMC", "GGA", "GNS", "VTG", "GLL", "ZDA"]))
    talker = draw(st.sampled_from(["GP", "GN", "GL", "GA", "GB", "BD", "QZ", "IN", "II", "EC",
                                   "U1", "PX", "P1", "0A"]))  # fmt: skip
    t = draw(st.sampled_from(["123519", "000000.5", "235960", "101010.123456", "120000.00"]))
    lat = draw(st.sampled_from(["4807.038", "0000.0001", "8959.9999", "0100.5", "1234",
                                "4807.0381234567", "4807.03812345678"]))  # fmt: skip
    lon = draw(st.sampled_from(["01131.000", "17959.99999999", "00000.0001", "123.4",
                                "01131.0001234567"]))  # fmt: skip
    ns, ew = draw(st.sampled_from(["N", "S"])), draw(st.sampled_from(["E", "W"]))
    num = st.sampled_from(["", "0", "022.4", "359.9", "0.000001", "12345678.1234567"])
    mode = draw(st.sampled_from(["", "A", "D", "E", "F", "M", "P", "R", "S"]))
    date = draw(st.sampled_from(["230394", "290224", "010180", "311279"]))
    signed = draw(st.sampled_from(["", "-0", "-545.4", "545.4", "-0.0001"]))
    gns_mode = draw(st.sampled_from(["A", "ANR", "NNA", "DDDDDDDD", "SN"]))
    good = {
        "RMC": [t, "A", lat, ns, lon, ew, draw(num), draw(num), date, "003.1", "W", mode, "S"],
        "GGA": [t, lat, ns, lon, ew, draw(st.sampled_from("12345678")),
                draw(st.sampled_from(["", "0", "08", "12"])), draw(num), signed, "M", "46.9",
                "M", "", ""],
        "GNS": [t, lat, ns, lon, ew, gns_mode, "08", draw(num), signed, "46.9", "", "", "V"],
        "VTG": [draw(num), "T", "", "M", draw(num), "N", "041.5", "K", mode],
        "GLL": [lat, ns, lon, ew, t, draw(st.sampled_from(["A", "V", ""])), mode],
        "ZDA": [t, draw(st.sampled_from(["01", "1", "29", "31", "00", ""])),
                draw(st.sampled_from(["02", "2", "12", "13", ""])),
                draw(st.sampled_from(["2024", "1980", "2100", "24", ""])), "00", "00"],
    }[kind]  # fmt: skip
    counts = {"RMC": (11, 12, 13), "GGA": (14,), "GNS": (12, 13), "VTG": (8, 9),
              "GLL": (4, 6, 7), "ZDA": (6,)}[kind]  # fmt: skip
    fields = good[: draw(st.sampled_from(counts))]
    for _ in range(draw(st.integers(0, 2))):  # a few fields perturbed, most kept valid
        fields[draw(st.integers(0, len(fields) - 1))] = draw(FIELD)
    return frame(",".join([talker + kind, *fields]))


@settings(max_examples=300)
@given(st.lists(st.lists(st.one_of(checksummed(), shaped()), max_size=5).map(b"".join),
                max_size=6))  # fmt: skip
def test_kernel_equals_scalar_parser_on_checksummed_random_fields(payloads: list[bytes]) -> None:
    both(payloads)
    both(payloads, LAX)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=120), max_size=6), st.booleans())
def test_kernel_equals_scalar_parser_on_binary_bytes(payloads: list[bytes], lax: bool) -> None:
    both(payloads, LAX if lax else STRICT)


@settings(max_examples=100)
@given(st.lists(st.one_of(shaped(), st.binary(max_size=20)), max_size=8), st.booleans())
def test_kernel_equals_scalar_parser_with_garbage_between_sentences(
    parts: list[bytes], lax: bool
) -> None:
    both([b"".join(parts), b"$", b"*", b"", b"$$$,*00"], LAX if lax else STRICT)


@settings(max_examples=200)
@given(st.integers(60, 130), st.sampled_from(["GPRMC", "PSRFEPE", "INGGA", "GNGLL", "GPGSV"]),
       st.booleans())  # fmt: skip
def test_kernel_equals_scalar_parser_around_the_length_bounds(
    total: int, address: str, good_checksum: bool
) -> None:
    """Sentences of 60-130 characters of every address class, padded in an unread field."""
    body = {
        "GPRMC": "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,{},W",
        "PSRFEPE": "PSRFEPE,1,2,{}",
        "INGGA": "INGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,{}",
        "GNGLL": "GNGLL,4807.038,N,01131.000,E,123519,A,{}",
        "GPGSV": "GPGSV,1,1,{}",
    }[address]
    pad = max(0, total - 4 - len(body.format("")))
    s = frame(body.format("0" * pad))
    if not good_checksum:
        s = s[:-4] + b"00\r\n" if s[-4:-2] != b"00" else s[:-4] + b"11\r\n"
    both([s])


def _padded_rmc(total: int) -> bytes:
    """A valid RMC of exactly ``total`` characters from '$' to the checksum (line end aside),
    padded in the magnetic variation field (which the decoder does not read)."""
    body = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,{},W"
    pad = total - 4 - len(body.format(""))
    return frame(body.format("0" * pad), eol=b"")


def test_the_sane_bound_is_the_limit_not_82_characters() -> None:
    at, over = _padded_rmc(MAX_SENTENCE_CHARS), _padded_rmc(MAX_SENTENCE_CHARS + 1)
    std, above = _padded_rmc(82), _padded_rmc(83)
    assert (len(at), len(over)) == (MAX_SENTENCE_CHARS, MAX_SENTENCE_CHARS + 1)
    po = both([b"\r\n".join([std, above, at, over])])
    assert len(po.rows) == 3
    assert [r[1].value for r in po.rejects] == ["too_long"]
    assert po.fallback_rows == 0, "the kernel reads 83-120 characters itself"


def test_empty_optional_fields_are_nan_and_empty_required_ones_fall_back() -> None:
    po = both([
        frame("GPRMC,123519,A,4807.038,N,01131.000,E,,,230394,,"),
        frame("GPGGA,123519,4807.038,N,01131.000,E,1,,,,M,,M,,"),
        frame("GPVTG,,T,,M,,N,,K"),
        frame("GPRMC,,A,4807.038,N,01131.000,E,,,230394,,"),
        frame("GPGGA,123519,,,,,1,08,0.9,545.4,M,46.9,M,,"),
    ])  # fmt: skip
    assert len(po.rows) == 3
    assert np.isnan(po.rows.speed_kmh[0])
    assert np.isnan(po.rows.hdop[1])
    assert po.rows.sats[1] == -1
    assert po.fallback_rows == 2  # the scalar parser words both rejects


def test_long_proprietary_addresses_are_skipped_by_name() -> None:
    po = both([frame("PABCDEFGHIJKLMN,1,2") + frame("PABCDEFGH,1") + frame("PGRME,1") * 2])
    assert po.skipped == {"PABCDEFGHIJKLMN": 1, "PABCDEFGH": 1, "PGRME": 2}


def test_huge_payloads_of_garbage_and_dollars_do_not_crash() -> None:
    rng = np.random.default_rng(3)
    junk = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    gga = frame("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    payloads = [junk, b"$" * 100_000, gga * 20_000]
    po = parse_compiled(payloads, STRICT)
    assert len(po.starts) == junk.count(b"$") + 100_000 + 20_000
    assert len(po.rows) == 20_000
    r = Decoder().decode(["u", "u", "u"], payloads, [T0] * 3)
    assert accounted(r) == r.counts["sentences"]


def test_every_supported_address_and_the_payload_of_each_sentence() -> None:
    talkers = ["GP", "GN", "GL", "GA", "GB", "BD", "QZ"]
    payloads = [
        frame(f"{t}RMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W", eol=b"")
        + frame(f"{t}VTG,084.4,T,,M,022.4,N,041.5,K", eol=b"\n")
        for t in talkers
    ]
    po = both(payloads)
    assert po.rows.talker.tolist() == [talker_code(t) for t in talkers for _ in (0, 1)]
    assert po.rows.payload.tolist() == [i for i in range(len(talkers)) for _ in (0, 1)]
    assert po.fallback_rows == 0


TRICKY = [
    "GPRMC,-123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,,",
    "GPRMC,123519,A,-4807.038,N,01131.000,E,022.4,084.4,230394,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,-022.4,084.4,230394,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394.,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,-30394,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,,,N",
    "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,,,AA",
    "GPRMC,123519,A,4807.038,N,01131.000,E,1234567890123456,084.4,230394,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,123456789012345,084.4,230394,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,0.12345678901234,084.4,230394,,",
    "GPRMC,123519,A,4807.038,N,01131.000,E,00000000000000001,084.4,230394,,",
    "GPRMC,123519,A,4807..038,N,01131.000,E,022.4,084.4,230394,,",
    "GPRMC,123519,A,4860.000,N,01131.000,E,022.4,084.4,230394,,",
    "GPRMC,123519,A,4807.038,NN,01131.000,E,022.4,084.4,230394,,",
    "GPRMC,235960,A,4807.038,N,01131.000,E,022.4,084.4,311216,,",
    "GPRMC,125960,A,4807.038,N,01131.000,E,022.4,084.4,290200,,",
    "GPGGA,123519,4807.038,N,01131.000,E,1,-8,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,1,8.,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,1,108,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,1,08,-0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,--545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,5-45.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,9,08,0.9,545.4,M,46.9,M,,",
    "GPGGA,123519,4807.038,N,01131.000,E,0,08,0.9,545.4,M,46.9,M,,",
    "GNGNS,123519,4807.038,N,01131.000,E,NNN,08,0.9,545.4,46.9,,",
    "GNGNS,123519,4807.038,N,01131.000,E,ANX,08,0.9,545.4,46.9,,",
    "GNGNS,123519,4807.038,N,01131.000,E,ADPRFEMSA,08,0.9,545.4,46.9,,",
    "GPVTG,084.4,T,,M,022.4,N,041.5,K,N",
    "GPVTG,-084.4,T,,M,022.4,N,041.5,K,A",
]


def test_tricky_fields_decided_as_the_scalar_parser_does() -> None:
    """Each is one character away from a row; the kernel must hand it over or agree."""
    both([frame(s) for s in TRICKY])
    for s in TRICKY:
        both([frame(s)])
