"""`fleetwatch decode`: files and stdin, #recv lines, comments, summary on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.fixes import iso_utc
from fleetwatch.cli import main
from fleetwatch.cmd_decode import split_payloads
from ingest.nmea_encode import encode_gga, encode_rmc
from tests.nmea_helpers import T0, S, fix

KEYS = {"t", "lat", "lon", "speed_kmh", "course", "quality", "sats", "hdop", "talker"}


def simulator_file(tmp_path: Path) -> Path:
    """The simulator's payload file format (docs/formats.md): #recv before each payload."""
    out = [b"# a comment line\n"]
    for i in range(5):
        f = fix(T0 + i * S, lat=48.1 + i * 1e-4)
        out.append(f"#recv {iso_utc(T0 + i * S + 400_000)}\n".encode())
        out.append(encode_rmc(f) + encode_gga(f))
    out.append(f"#recv {iso_utc(T0 + 9 * S)}\n".encode())
    out.append(b"$GPRMC,bad*01\r\n\xff\xfe garbage\r\n")
    # A fix 10 min after its #recv: future, although it is the file's latest.
    out.append(f"#recv {iso_utc(T0 + 10 * S)}\n".encode())
    out.append(encode_rmc(fix(T0 + 610 * S, lat=48.2)))
    path = tmp_path / "U0001.nmea"
    path.write_bytes(b"".join(out))
    return path


def test_decode_file_uses_recv_lines_and_writes_fixes_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", str(simulator_file(tmp_path))]) == 0
    out, err = capsys.readouterr()
    fixes = [json.loads(line) for line in out.splitlines()]
    assert len(fixes) == 5
    assert set(fixes[0]) >= KEYS
    assert fixes[0]["t"] == iso_utc(T0)
    assert fixes[0]["unit"] == "U0001"
    assert fixes[0]["quality"] == 1
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["rejects"] == {"bad_checksum": 1, "future_time": 1}
    assert summary["accepted"] == 5


def test_archive_log_auto_recv_time_is_the_latest_fix(
    real_tracks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = real_tracks / "genivi_munich_petuelring_car.nmea"
    assert main(["decode", str(log), "--unit", "car"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(err)
    assert summary["recv_time"] == "2009-04-01T13:11:26Z"
    assert summary["recv_time_source"] == "auto:latest-fix"
    assert summary["rejects"]["no_fix"] == 40
    assert summary["skipped"] == {"GPGSA": 1867, "GPGSV": 5601}
    assert len(out.splitlines()) == summary["accepted"] > 1800


def test_explicit_recv_time_makes_an_archive_log_too_old(
    real_tracks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = real_tracks / "genivi_20100411_Geko301_Regensburg_car.nmea"
    assert main(["decode", str(log), "--recv-time", "2026-11-23T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err)["rejects"]["too_old"] == 774


def test_stdin_in_a_real_process_without_checksums(tmp_path: Path) -> None:
    body = encode_rmc(fix()).split(b"*")[0] + b"\r\n"
    cmd = [sys.executable, "-m", "fleetwatch", "decode", "--recv-time", iso_utc(T0)]
    strict = subprocess.run(cmd, input=body, capture_output=True, check=False, timeout=60)
    assert strict.returncode == 0
    assert strict.stdout == b""
    assert json.loads(strict.stderr)["rejects"] == {"missing_checksum": 1}
    lax = subprocess.run(
        [*cmd, "--no-checksum-required"], input=body, capture_output=True, check=False, timeout=60
    )
    assert json.loads(lax.stdout)["t"] == iso_utc(T0)


@pytest.mark.parametrize(
    "argv", [["--recv-time", "yesterday"], ["--recv-time", "2026-11-23T08:00"]]
)
def test_bad_recv_time_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(["decode", str(simulator_file(tmp_path)), *argv]) == 2
    assert "recv" not in capsys.readouterr().out


def test_missing_file_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", str(tmp_path / "nope.nmea")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_chunks_without_recv_lines_are_cut_between_epochs() -> None:
    lines = b"".join(encode_rmc(fix(T0 + i * S)) + encode_gga(fix(T0 + i * S)) for i in range(50))
    payloads = list(split_payloads(lines, chunk_bytes=300))
    assert len(payloads) > 5
    for p in payloads:
        assert p.data.startswith(b"$GPRMC")
        assert p.data.count(b"RMC") == p.data.count(b"GGA")


def test_auto_never_dates_a_time_only_fix_by_the_wall_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log of 2011 whose first GGA precedes its first RMC: the GGA takes the RMC's date, the
    receive time is the log's latest dated fix, and a GGA-only log is undated, not 'today'."""
    old = T0 - 5000 * 86_400 * S
    log = tmp_path / "old.nmea"
    log.write_bytes(encode_gga(fix(old)) + encode_rmc(fix(old + S)) + encode_gga(fix(old + S)))
    now = T0  # the wall clock: must not appear anywhere below
    assert run_main(log, now) == 0
    out, err = capsys.readouterr()
    assert [json.loads(x)["t"] for x in out.splitlines()] == [iso_utc(old), iso_utc(old + S)]
    assert json.loads(err)["recv_time"] == iso_utc(old + S)
    only_gga = tmp_path / "gga.nmea"
    only_gga.write_bytes(encode_gga(fix(old)) + encode_gga(fix(old + S)))
    assert run_main(only_gga, now) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err)["rejects"] == {"undated": 2}
    # a live capture: the receive time is real and dates them
    assert run_main(only_gga, old + 10 * S, "now") == 0
    out, _ = capsys.readouterr()
    assert [json.loads(x)["t"] for x in out.splitlines()] == [iso_utc(old), iso_utc(old + S)]


def run_main(path: Path, now_us: int, recv_time: str = "auto") -> int:
    import argparse

    from fleetwatch.cmd_decode import run

    args = argparse.Namespace(
        file=path, unit=None, recv_time=recv_time, no_checksum_required=False,
        max_speed_kmh=250.0, max_age_days=30.0, week_rollover="correct", show_rejects=False,
    )  # fmt: skip
    return run(args, now_us=now_us)
