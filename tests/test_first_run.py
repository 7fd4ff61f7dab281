"""A new user's first run: every documented command works with its defaults, and bad input is
one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

from fleetwatch import cmd_replay
from fleetwatch.cli import EPILOG, SUBCOMMANDS, build_parser, main
from fleetwatch.cmd_check_broker import publish_backlog
from fleetwatch.engine_setup import PlanSetupError, load_schedule

#: fewer fixes, the same plan: a day's routes and windows do not depend on the fix rate
FEW_FIXES = ["--rate-hz", "0.1", "--slow-rate-hz", "0.1"]


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- fleetwatch simulate / replay / decode ---------------------------------------------------


def test_the_simulate_example_of_fleetwatch_help_writes_a_day(tmp_path: Path) -> None:
    # it was `--vehicles 20` with the default 1,500 sites: "V001's 68 stops cannot be served"
    (example,) = [x for x in EPILOG.splitlines() if "fleetwatch simulate" in x]
    argv = shlex.split(example)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "day")
    assert main([*argv, *FEW_FIXES]) == 0
    assert (tmp_path / "day" / "truth.json").is_file()


def test_simulate_a_single_vehicle_works_with_the_defaults(tmp_path: Path) -> None:
    # the default clock-off and silent units (one each) need two vehicles; the demo's
    # `--vehicles 1` fell back to the synthetic fleet because of it
    assert main(["simulate", "--out", str(tmp_path), "--vehicles", "1", "--sites", "5",
                 *FEW_FIXES]) == 0  # fmt: skip
    units = (tmp_path / "units.csv").read_text().splitlines()
    assert len(units) == 2


def test_simulate_keeps_the_faulty_units_when_the_fleet_can_carry_them(tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--vehicles", "2", "--sites", "5",
                 *FEW_FIXES]) == 0  # fmt: skip
    scenario = json.loads((tmp_path / "truth.json").read_text())["scenario"]
    assert (scenario["clock_off_units"], scenario["silent_units"]) == (1, 1)


def test_simulate_too_many_sites_names_the_options_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--vehicles", "3", *FEW_FIXES]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "1500 sites are too many for 3 vehicles" in line
    assert "--vehicles" in line
    assert "--sites" in line


def test_simulate_too_many_faulty_units_names_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--out", str(tmp_path), "--vehicles", "1", "--silent-units", "2"]
    assert main(argv) == 2
    assert "--silent-units" in one_error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def small_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small_day")
    assert main(["simulate", "--out", str(out), "--vehicles", "2", "--sites", "3",
                 *FEW_FIXES]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize(
    "text", ['{"type": "FeatureCollection", "features": [', '{"type": "Feature"}']
)
def test_replay_of_a_malformed_sites_file_is_one_line(
    small_day: Path, tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "scenario"
    scenario.mkdir()
    for name in ("units.csv", "depots.csv"):
        (scenario / name).write_text((small_day / name).read_text())
    (scenario / "sites.geojson").write_text(text)
    assert main(["replay", str(scenario), "--out", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"fleetwatch replay: {scenario}: sites.geojson ")


def test_replay_refuses_an_unusable_out_before_replaying(
    small_day: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(cmd_replay, "replay_scenario", _must_not_replay)
    a_file = tmp_path / "out"
    a_file.write_text("")
    assert main(["replay", str(small_day), "--out", str(a_file)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--out" in line
    assert "a file of that name exists" in line


def test_replay_evaluate_without_truth_fails_before_replaying(
    small_day: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    scenario = tmp_path / "scenario"
    scenario.mkdir()
    for f in small_day.rglob("*"):
        if f.is_file() and f.name != "truth.json":
            target = scenario / f.relative_to(small_day)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    monkeypatch.setattr(cmd_replay, "build_engine", _must_not_replay)
    assert main(["replay", str(scenario), "--out", str(tmp_path / "o"), "--evaluate"]) == 1
    assert "--evaluate needs truth.json" in one_error_line(capsys.readouterr().err)


def test_a_plans_dir_of_plans_and_depots_takes_the_configured_sites_file(
    small_day: Path, tmp_path: Path
) -> None:
    # docs/configuration.md: FLEETWATCH_PLANS_DIR holds plans.csv and depots.csv; `fleetwatch
    # run` refused such a directory with "no sites.geojson" (only scenario directories worked)
    plans = tmp_path / "plans"
    plans.mkdir()
    for name in ("plans.csv", "depots.csv"):
        (plans / name).write_text((small_day / name).read_text())
    with pytest.raises(PlanSetupError, match="service windows"):
        load_schedule(plans)
    schedule = load_schedule(plans, sites_file=small_day / "sites.geojson")
    assert schedule.inputs.plans
    assert schedule.inputs == load_schedule(small_day).inputs


def _must_not_replay(*_a: object, **_k: object) -> None:
    raise AssertionError("the bad input should have been refused before the replay")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # replay: --batch-payloads 0 exited 1 (ValueError in the replay), --min-dwell-s -5 exited 2
        (["replay", "D", "--out", "O", "--batch-payloads", "0"],
         "argument --batch-payloads: expected a whole number >= 1, got '0'"),
        (["replay", "D", "--out", "O", "--min-dwell-s", "-5"],
         "argument --min-dwell-s: expected a number > 0, got '-5'"),
        (["replay", "D", "--out", "O", "--batch-s", "nan"],
         "argument --batch-s: expected a number > 0, got 'nan'"),
        (["decode", "-", "--max-age-days", "abc"],
         "argument --max-age-days: expected a number > 0, got 'abc'"),
        (["decode", "-", "--max-age-days", "inf"],
         "argument --max-age-days: expected a number > 0, got 'inf'"),
        (["decode", "-", "--max-speed-kmh", "-1"],
         "argument --max-speed-kmh: expected a number > 0, got '-1'"),
        (["simulate", "--date", "2026-02-30"],
         "argument --date: expected a date YYYY-MM-DD, got '2026-02-30' (day is out of range "
         "for month)"),
        (["simulate", "--vehicles", "0"],
         "argument --vehicles: expected a whole number >= 1, got '0'"),
        (["simulate", "--slow-unit-fraction", "1.5"],
         "argument --slow-unit-fraction: expected a number between 0 and 1, got '1.5'"),
        (["simulate", "--speed", "fast"],
         "argument --speed: expected a number > 0 or 'max', got 'fast'"),
        (["simulate", "--noise-m", "5,x"],
         "argument --noise-m: expected a number A or a pair A,B, got '5,x'"),
        (["loadtest", "--rate", "0"], "argument --rate: expected a number > 0, got '0'"),
        (["check-broker", "--units", "0"],
         "argument --units: expected a whole number >= 1, got '0'"),
        (["demo", "--vehicles", "-3"],
         "argument --vehicles: expected a whole number >= 1, got '-3'"),
        (["run", "--http-port", "70000"], "argument --http-port: expected a port 0..65535, got "
         "'70000'"),
        (["run", "--wait-for", "-1"], "argument --wait-for: expected a number >= 0, got '-1'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_usage_errors_naming_the_option_and_its_form(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {expected}")


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_number_option_of_the_commands_is_checked_while_parsing(command: str) -> None:
    parser = build_parser([command])
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if action.type in (int, float):
            assert action.option_strings == ["--seed"], f"{command} {action.option_strings}"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [("sites", None, "no such file"),  # it said "unknown extension ''"
     ("sites", '{"type": "FeatureCollection", "features": []}', "unknown extension ''"),
     ("sites.geojson", "{not json", "not valid JSON")],
)  # fmt: skip
def test_loadtest_sites_errors_name_the_option_given(
    name: str, text: str | None, expected: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # they named FLEETWATCH_SITES_FILE, a setting the user had not set
    sites = tmp_path / name
    if text is not None:
        sites.write_text(text)
    argv = ["loadtest", "--sites", str(sites), "--write-units", str(tmp_path / "units.csv")]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("fleetwatch loadtest: error: --sites")
    assert str(sites) in line
    assert expected in line
    assert "FLEETWATCH_SITES_FILE" not in line
    assert not (tmp_path / "units.csv").exists()


def test_replay_of_a_missing_scenario_is_a_usage_error_and_makes_no_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it exited 1 ("no sites.geojson (is it a scenario directory?)") after creating --out
    missing = tmp_path / "nope"
    assert main(["replay", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"fleetwatch replay: SCENARIO_DIR {missing}: no such directory"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_missing_units_file_names_the_option_before_anything_starts(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # run named FLEETWATCH_UNITS_FILE for --units; demo started its private servers and then
    # printed an ExceptionGroup traceback
    monkeypatch.delenv("FLEETWATCH_UNITS_FILE", raising=False)
    monkeypatch.setenv("FLEETWATCH_MQTT_URL", "mqtt://127.0.0.1:1")
    monkeypatch.setenv("FLEETWATCH_DATABASE_URL", "postgresql://u@127.0.0.1:1/db")
    monkeypatch.setattr("fleetwatch.cmd_demo.open_private_servers", _must_not_replay)
    missing = tmp_path / "units.csv"
    assert main([command, "--units", str(missing)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert (
        line == f"fleetwatch {command}: --units {missing}: no such file; give the path of an "
        "existing file"
    )


# -- fleetwatch check-broker ---------------------------------------------------------------

QUEUE_SIZE = 15  # paho's MQTT_ERR_QUEUE_SIZE


class _FakeInfo:
    """paho's MQTTMessageInfo, acknowledged when waited for (a broker slower than the queue)."""

    def __init__(self, client: _FakePahoClient, mid: int, rc: int) -> None:
        self.client, self.mid, self.rc = client, mid, rc
        self.published = False

    def wait_for_publish(self, timeout: float | None = None) -> None:
        if self.rc == QUEUE_SIZE:
            raise ValueError("Message is not queued due to ERR_QUEUE_SIZE")
        if self.client.acks:
            self.published = True
            self.client.in_flight.discard(self.mid)

    def is_published(self) -> bool:
        return self.published


class _FakePahoClient:
    """paho's rule that broke the default probe: packet ids are 16 bits, and a publish whose id
    is still unacknowledged is refused with MQTT_ERR_QUEUE_SIZE."""

    def __init__(self, *, acks: bool = True) -> None:
        self.acks = acks
        self.sent = 0
        self.in_flight: set[int] = set()
        self.most_in_flight = 0

    def publish(self, topic: str, payload: bytes, qos: int) -> _FakeInfo:
        mid = self.sent % 65535 + 1
        self.sent += 1
        if mid in self.in_flight:
            return _FakeInfo(self, mid, QUEUE_SIZE)
        self.in_flight.add(mid)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return _FakeInfo(self, mid, 0)


def test_check_broker_default_probe_outgrows_16_bit_packet_ids() -> None:
    # the default probe: 150 units x 1 Hz x 15 min; queued in one go it crashed with
    # "ValueError: Message is not queued due to ERR_QUEUE_SIZE" on a first run
    client = _FakePahoClient()
    publish_backlog(client, "fleetwatch-check/t", b"$x", 150 * 15 * 60)  # type: ignore[arg-type]
    assert client.sent == 135_000
    assert not client.in_flight
    assert client.most_in_flight < 65535


def test_check_broker_broker_that_stops_acknowledging_is_a_connection_error() -> None:
    client = _FakePahoClient(acks=False)
    with pytest.raises(ConnectionError, match="acknowledged nothing"):
        publish_backlog(client, "t", b"$x", 20, window=5, ack_timeout_s=0.01)  # type: ignore[arg-type]


# -- benchmarks/: defaults that work on a fresh machine, bad options refused before any work ---

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # as `python benchmarks/X.py` runs them
    return importlib.import_module(name)


def usage_error(
    module: ModuleType, argv: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:  # fmt: skip
    """The message of the usage error (exit 2) that *module*'s main() gives for *argv*."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    with pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("name", "flag"),
    [("bench_stops", "--matched"), ("bench_visits_kernel", "--pickle"),
     ("bench_motion_kernel", "--matched")],
)  # fmt: skip
def test_kernel_benchmarks_say_what_input_they_need(
    name: str, flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # their default was /tmp/day_matched.pkl, a file only some engineers' machines have
    module = bench(name)
    monkeypatch.setattr(bench("bench_detect"), "MATCHED_PICKLE", tmp_path / "absent.pkl")
    assert "--scenario DIR" in usage_error(module, [], monkeypatch, capsys)
    missing = tmp_path / "missing.pkl"
    assert f"{flag} {missing}: no such file" in usage_error(
        module, [flag, str(missing)], monkeypatch, capsys
    )
    assert "not a scenario directory" in usage_error(
        module, ["--scenario", str(tmp_path)], monkeypatch, capsys
    )


def test_bench_mqtt_receive_skips_a_receiver_whose_library_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gmqtt is no project dependency: the default list printed a traceback for it each repeat
    module = bench("bench_mqtt_receive")
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    names, notes = module.choose_receivers(",".join(module.ALL), {})
    assert names == ["mosquitto_sub", "fleetwatch", "paho", "aiomqtt"]
    assert any("gmqtt is not installed" in n for n in notes)
    with pytest.raises(ValueError, match="unknown receiver"):
        module.choose_receivers("mosquitto_sub,fleetwach", {})


@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("bench_end_to_end", ["--skip", "niave"], "--skip: unknown ['niave']"),
        (
            "bench_end_to_end",
            ["--engine-offline", "--units", "0"],
            "--units: expected a whole number >= 1",
        ),
        ("profile_engine_steady", ["--units", "30", "--duration", "10"], "--warmup (120 s)"),
        ("bench_detect", ["--vehicles", "3"], "1500 sites are too many for 3 vehicles"),
        ("bench_detect", ["--batch-fixes", "0"], "--batch-fixes: expected a whole number >= 1"),
        ("bench_simulator", ["--vehicles", "3"], "1500 sites are too many for 3 vehicles"),
        ("bench_mqtt_receive", ["--receivers", "gmqt"], "unknown receiver(s) ['gmqt']"),
    ],
)
def test_benchmark_bad_options_are_usage_errors(
    name: str, argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert expected in usage_error(bench(name), argv, monkeypatch, capsys)


def test_bench_decode_checks_the_real_logs_before_the_synthetic_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = bench("bench_decode")
    monkeypatch.setattr(module, "first_call_s", _must_not_run)
    line = usage_error(module, ["--real-tracks", str(tmp_path)], monkeypatch, capsys)
    assert f"no *.nmea logs in {tmp_path}: pass --real-tracks DIR" in line


def _must_not_run(*_a: object, **_k: object) -> float:
    raise AssertionError("the bad option should have been refused before any work")


ALL_BENCHMARKS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))


class _Parsed(Exception):
    """Raised instead of parsing: the benchmark's parser is caught before any work."""


def bench_parser(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The ArgumentParser that ``python benchmarks/<name>.py`` builds (stopped at the parse)."""
    bench(name)  # its imports, and benchmarks/ on sys.path
    seen: list[argparse.ArgumentParser] = []

    def catch(self: argparse.ArgumentParser, *_a: object, **_k: object) -> NoReturn:
        seen.append(self)
        raise _Parsed

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        m.setattr(sys, "argv", [f"{name}.py"])
        with pytest.raises(_Parsed):
            runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="__main__")
    return seen[0]


@pytest.mark.parametrize("name", ALL_BENCHMARKS)
def test_every_benchmark_says_what_it_measures_in_its_help(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    description = bench_parser(name, monkeypatch).description
    assert description
    assert description.split()[0] in (bench(name).__doc__ or "")


def test_the_alert_diagram_helper_prints_only_the_diagram() -> None:
    # alerts/__init__ imported alerts.threads (through alerts.desk), so runpy warned that the
    # module was already imported before running it as __main__
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "alerts.threads"],
        capture_output=True, text=True, cwd=BENCHMARKS.parent, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("stateDiagram-v2\n")


#: options whose every whole number is meaningful
ANY_INT = {"--seed"}


@pytest.mark.parametrize("name", ALL_BENCHMARKS)
def test_every_benchmark_refuses_a_zero_or_negative_size_while_parsing(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench_alerts --repeats 0 was an IndexError, --stops 0 a ZeroDivisionError; the database
    # benchmarks set up a private PostgreSQL before failing on the same
    args = bench("_args")
    checked = {args.positive_int, args.positive_float, args.non_negative_int,
               args.non_negative_float}  # fmt: skip
    parser = bench_parser(name, monkeypatch)
    for action in parser._actions:
        if not action.option_strings or action.type is None:
            continue
        option = action.option_strings[0]
        if action.type in (int, float):
            assert option in ANY_INT, f"{name} {option}: a size without a check"
            continue
        if action.type not in checked:
            continue
        bad = "-1" if action.type.__name__.startswith("non_negative") else "0"
        values = [bad] * (action.nargs if isinstance(action.nargs, int) else 1)
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([option, *values])
        assert exc.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"argument {option}" in line
        assert f"expected a {'whole ' if 'int' in action.type.__name__ else ''}number" in line
        assert f"got '{bad}'" in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["--repeats", "0"], "argument --repeats: expected a whole number >= 1, got '0'"),
     (["--stops", "0"], "argument --stops: expected a whole number >= 1, got '0'"),
     (["--vehicles", "1.5"], "argument --vehicles: expected a whole number >= 1, got '1.5'")],
)  # fmt: skip
def test_bench_alerts_zero_sizes_are_usage_errors(
    argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert usage_error(bench("bench_alerts"), argv, monkeypatch, capsys).endswith(expected)


@pytest.mark.parametrize("text", ["0", "-2", "nan", "inf", "soon"])
def test_benchmark_durations_must_be_finite_and_positive(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected a number > 0, got '{text}'"):
        bench("_args").positive_float(text)
    assert bench("_args").non_negative_float("0") == 0.0


def test_bench_ws_fanout_expects_the_bursts_sent_in_the_window() -> None:
    # --seconds 3 --burst-every 5 expected 0.6 of a burst per console: one arrived, 166.7 %
    module = bench("bench_ws_fanout")
    windows = [{"from": 104.0, "to": 107.0, "consoles": 2}, {"from": 104.1, "to": 107.1,
                                                            "consoles": 3}]  # fmt: skip
    assert module.expected_alert_versions(windows, [105.0], burst=50) == 5 * 50
    assert module.expected_alert_versions(windows, [100.0, 110.0], burst=50) == 0
    assert module.expected_alert_versions(windows, [104.05, 105.0], burst=10) == 2 * 2 * 10 + 3 * 10


def test_schedule_day_figures_refuses_simulate_options_it_would_ignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # with an existing OUT/truth.json the day was replayed as it was: --vehicles 5 and --seed 7
    # changed nothing, silently
    module = bench("schedule_day_figures")
    monkeypatch.setattr(module, "replay_scenario", _must_not_replay)
    (tmp_path / "truth.json").write_text("{}")
    line = usage_error(module, [str(tmp_path), "--vehicles", "5", "--seed", "7"], monkeypatch,
                       capsys)  # fmt: skip
    assert f"{tmp_path} already holds a simulated day" in line
    assert "--vehicles 5 --seed" in line
    monkeypatch.setattr(sys, "argv", ["schedule_day_figures.py", "--help"])
    with pytest.raises(SystemExit):
        module.main()
    assert "any simulate option is refused" in " ".join(capsys.readouterr().out.split())
