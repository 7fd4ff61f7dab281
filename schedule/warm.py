"""Compile (or load from numba's cache) every detection kernel before the first round.

Why one entry: the tracker's re-run calls five compiled kernels (motion, visits, stops,
checkpoints, append rounds); a cold compile of each costs seconds to tens of seconds on a
loaded 2-core machine, and done by the first live round it would hold that round and every
fix queued behind it.  The service calls this in a worker thread at start, beside the fence
query's ``geofence.warm_up``; the engine's child process calls it before its first request.
"""

from __future__ import annotations

from schedule import (
    append_kernel,
    checkpoint_kernel,
    motion_kernel,
    parked_kernel,
    rerun_kernel,
    stops_kernel,
    visits_kernel,
)


def warm_up() -> None:
    """Run each kernel once on the array types the tracker builds."""
    motion_kernel.warm_up()
    visits_kernel.warm_up()
    stops_kernel.warm_up()
    checkpoint_kernel.warm_up()
    append_kernel.warm_up()
    parked_kernel.warm_up()
    rerun_kernel.warm_up()  # (last: it runs a tracker, whose other kernels are warm by now)
