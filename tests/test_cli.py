"""The CLI a user expects: fast help that loads nothing heavy, per-command usage and errors,
help text on every option, `decode -`, a hint for GPX, and docs that agree with `--help`."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwatch import cmd_decode
from fleetwatch.cli import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()
OPS_DOC = ROOT / "docs" / "operations.md"


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser([name])
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    p: argparse.ArgumentParser = action.choices[name]
    return p


def modules_loaded_by(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from fleetwatch.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.parametrize("argv", [["--help"], ["decode", "--help"], ["run", "--help"]])
def test_help_does_not_import_numba_or_numpy(argv: list[str]) -> None:
    loaded = modules_loaded_by(argv)
    assert "numba" not in loaded
    assert "numpy" not in loaded


def test_the_check_can_fail_a_command_that_does_load_numpy() -> None:
    assert "numpy" in modules_loaded_by(["simulate", "--help"])


def test_top_level_help_is_for_users_and_lists_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
    assert "examples:" in out
    assert "subcommand per module" not in out  # not the developer docstring


def test_a_bad_option_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["decode", "--bogus-flag"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fleetwatch decode" in err
    assert "unrecognized arguments: --bogus-flag" in err


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_has_help_text(name: str) -> None:
    missing = [a.option_strings or a.dest for a in subparser(name)._actions if not a.help]
    assert missing == []


def test_decode_defaults_shown_in_help_are_the_decoders() -> None:
    from ingest.nmea import DecodeOptions

    d = DecodeOptions()
    assert d.max_speed_kmh == cmd_decode.DEFAULT_MAX_SPEED_KMH
    assert d.max_age_days == cmd_decode.DEFAULT_MAX_AGE_DAYS
    assert d.week_rollover == cmd_decode.DEFAULT_WEEK_ROLLOVER


RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"


def decode(argv: list[str], stdin: bytes) -> tuple[int, str, str]:
    args = subparser("decode").parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    rc = cmd_decode.run(args, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_decode_dash_reads_stdin() -> None:
    rc, out, _ = decode(["-"], RMC)
    assert rc == 0
    assert '"lat": 48.1173' in out


def test_decode_of_a_gpx_file_says_what_it_is_and_what_to_do(tmp_path: Path) -> None:
    gpx = tmp_path / "track.gpx"
    gpx.write_text('<?xml version="1.0"?>\n<gpx version="1.1"><trk></trk></gpx>\n')
    args = subparser("decode").parse_args([str(gpx)])
    err = io.StringIO()
    rc = cmd_decode.run(args, stdout=io.StringIO(), stderr=err)
    assert rc == 2
    assert "GPX" in err.getvalue()
    assert "gpsbabel" in err.getvalue()


# -- docs agree with --help ----------------------------------------------------------------------
def readme_commands() -> dict[str, str]:
    """README's command table: command -> its row."""
    rows = {}
    for line in README.splitlines():
        m = re.match(r"\| `fleetwatch ([a-z-]+)", line)
        if m:
            rows[m.group(1)] = rows.get(m.group(1), "") + line
    return rows


def test_readme_lists_exactly_the_commands_that_exist() -> None:
    assert set(readme_commands()) == set(SUBCOMMANDS)


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_the_readme_names_exists(name: str) -> None:
    row = readme_commands().get(name, "")
    options = set(subparser(name)._option_string_actions)
    for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", row):
        assert opt in options, f"README names {opt} for `fleetwatch {name}`; --help has not"


def test_every_run_option_that_is_a_setting_is_documented() -> None:
    from fleetwatch.config import FIELDS, env_name

    settings_options = [a for a in subparser("run")._actions if a.dest in FIELDS]
    assert len(settings_options) >= 8
    for action in settings_options:
        assert f"`{env_name(action.dest)}`" in CONFIG_DOC
        assert f"`{action.option_strings[0]}`" in CONFIG_DOC, action.option_strings


def test_the_exit_codes_in_the_docs_are_the_codes_run_returns() -> None:
    from fleetwatch import startup

    text = OPS_DOC.read_text()
    for name in ("EXIT_OK", "EXIT_ERROR", "EXIT_CONFIG", "EXIT_UNAVAILABLE", "EXIT_PORT"):
        code = getattr(startup, name)
        assert re.search(rf"\|\s*`?{code}`?\s*\|", text), f"exit code {code} ({name}) undocumented"


def test_packaging_ships_only_files_that_exist() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package, globs in data["tool"]["setuptools"]["package-data"].items():
        for pattern in globs:
            assert list((ROOT / package).glob(pattern)), f"{package}/{pattern} matches nothing"


def test_scripts_promise_no_browser_while_there_are_no_browser_tests() -> None:
    has_browser_tests = any("playwright" in p.read_text() for p in (ROOT / "tests").glob("*.py")
                            if p.name != "test_cli.py")  # fmt: skip
    for script in ("bootstrap.sh", "test.sh"):
        text = (ROOT / "scripts" / script).read_text().lower()
        if not has_browser_tests:
            assert "chromium" not in text
            assert "+ browser" not in text
