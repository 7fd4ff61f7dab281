"""Issue 8's day-level figures: simulate a day, run it through decode → match → detect → the
schedule board (tests/schedule_harness.py, receive-time steps, ticks at every deadline), score the
StopChanged stream against truth.json (schedule/evaluate_schedule.py).

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

from fleetwatch.cli import main as cli_main  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mixed", action="store_true")
    ap.add_argument("--step-s", type=float, default=30.0)
    a, rest = ap.parse_known_args()
    args = ["simulate", "--out", str(a.out), "--seed", str(a.seed), *rest]
    if a.mixed:
        args += MIXED
    if not (a.out / "truth.json").is_file() and cli_main(args) != 0:
        raise SystemExit("simulate failed")
    t = time.perf_counter()
    run = run_day(a.out, step_s=a.step_s)
    secs = time.perf_counter() - t
    truth = json.loads((a.out / "truth.json").read_text(encoding="utf-8"))
    fig = evaluate_schedule([e for e in run.events if isinstance(e, StopChanged)], truth)
    d = fig.to_json_dict()
    d.update(seed=a.seed, mixed=a.mixed, run_s=round(secs, 1), ticks=run.ticks)
    print(json.dumps(d))


if __name__ == "__main__":
    main()
