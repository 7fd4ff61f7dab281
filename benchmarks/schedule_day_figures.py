"""Issue 8's day-level figures: simulate a day, replay it through the engine (``fleetwatch
replay``'s ``replay_scenario``: decode → match → detect → schedule board → alert desk, commands
from commands.jsonl) and score the StopChanged stream against truth.json
(schedule/evaluate_schedule.py).  With ``--harness`` the board runs in tests/schedule_harness.py
instead (no alert desk).

  python benchmarks/schedule_day_figures.py OUT_DIR --seed 1 [--mixed] [simulate options...]

``--mixed``: 10 % skipped stops, congestion on 60 % of vehicles and a 30–60 min breakdown on
30 %, 1 dropout per unit on average, GPS noise 5–25 m, 2 % cancellations, 2 units out of
coverage across a window end.  Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _args import positive_float  # noqa: E402

from core.fixes import iso_utc  # noqa: E402
from fleetwatch.cli import main as cli_main  # noqa: E402
from fleetwatch.cmd_replay import replay_scenario  # noqa: E402
from schedule.evaluate_schedule import evaluate_schedule  # noqa: E402
from schedule.stop_events import StopChanged  # noqa: E402
from tests.schedule_harness import run_day  # noqa: E402

MIXED = [
    "--skip-rate",
    "0.1",
    "--late-rate",
    "0.6",
    "--breakdown-rate",
    "0.3",
    "--dropout-rate",
    "1.0",
    "--noise-m",
    "5,25",
    "--cancel-rate",
    "0.02",
    "--coverage-gap-units",
    "2",
]


def _transient_missed(changes: list[StopChanged], truth: dict[str, object]) -> list[str]:
    """Stops declared missed, then visited (late data): when and why, one line each."""
    by: dict[str, list[StopChanged]] = {}
    for c in changes:
        by.setdefault(c.stop_id, []).append(c)
    gaps = {g["site_id"] for g in truth.get("coverage_gaps", [])}  # type: ignore[attr-defined]
    out = []
    for sid, recs in by.items():
        flip = next((r for r in recs if r.previous == "missed" and r.state == "visited"), None)
        if flip is None or flip.arrival_us is None:
            continue
        missed = next(r for r in recs if r.state == "missed")
        out.append(
            f"{sid} {flip.visited_by} we={iso_utc(flip.window_end_us)} "
            f"missed@{iso_utc(missed.at_us)} visited@{iso_utc(flip.at_us)} "
            f"arrival={iso_utc(flip.arrival_us)}{' (coverage gap)' if flip.site_id in gaps else ''}"
        )
    return out


EPILOG = """\
simulate options: any other option goes to `fleetwatch simulate` (see `fleetwatch simulate
--help`: --vehicles, --sites, --rate-hz, --skip-rate...), as do --seed and --mixed.  They
only apply when OUT holds no day yet: with an OUT/truth.json the day is replayed as it is,
and any simulate option is refused (pass a new OUT, or delete the old one, to simulate again).
"""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "out", type=Path, metavar="OUT", help="the day's scenario directory (simulated if new)"
    )
    ap.add_argument("--seed", type=int, default=None, help="simulate option (default 1)")
    ap.add_argument("--mixed", action="store_true", help="simulate option: the disturbed day above")
    ap.add_argument("--step-s", type=positive_float, default=30.0, help="harness step")
    ap.add_argument("--harness", action="store_true", help="run the board in the test harness")
    a, rest = ap.parse_known_args()
    seed = 1 if a.seed is None else a.seed
    given = [*rest, *(["--seed"] if a.seed is not None else []), *(["--mixed"] if a.mixed else [])]
    args = ["simulate", "--out", str(a.out), "--seed", str(seed), *rest]
    if a.mixed:
        args += MIXED
    if (a.out / "truth.json").is_file():
        if given:  # they were silently ignored: the figures were of the old day
            ap.error(
                f"{a.out} already holds a simulated day (truth.json), so the simulate options "
                f"{' '.join(given)} would be ignored: pass a new OUT, or none of them"
            )
    elif cli_main(args) != 0:
        raise SystemExit("simulate failed")
    t = time.perf_counter()
    if a.harness:
        events: list[object] = list(run_day(a.out, step_s=a.step_s).events)
    else:
        events = list(replay_scenario(a.out).output)
    secs = time.perf_counter() - t
    truth = json.loads((a.out / "truth.json").read_text(encoding="utf-8"))
    changes = [e for e in events if isinstance(e, StopChanged)]
    fig = evaluate_schedule(changes, truth)
    d = fig.to_json_dict()
    scenario = truth.get("scenario", {})
    d.update(seed=scenario.get("seed", seed), mixed=a.mixed, run_s=round(secs, 1))
    transient = _transient_missed(changes, truth)
    if transient:
        d["transient_missed_detail"] = transient
    print(json.dumps(d))


if __name__ == "__main__":
    main()
