"""/metrics scrape latency: the web shell (FastAPI + uvicorn, ``fleetwatch.web``) vs the previous
endpoint (websockets 17's asyncio server answering from ``process_request``), same run, same
registry.

Both servers run in this process on one event loop and serve the same populated
:class:`ingest.metrics.IngestMetrics` registry (the body is identical).  The client sends one GET
per connection (as the old server closed after each answer) and, for uvicorn, also on one
kept-alive connection (what Prometheus does).  Rounds alternate between the servers so that
machine noise hits both; each round is ``--requests`` sequential scrapes; the figure is the
median of the per-round medians, with the same-run ratio.

Run: python benchmarks/bench_http_metrics.py [--rounds 7] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np
from _args import positive_int
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from fleetwatch.web import WebShell, open_web_server
from ingest.metrics import IngestMetrics


def populated() -> tuple[WebShell, IngestMetrics]:
    shell = WebShell()
    m = IngestMetrics(shell.registry)
    m.fixes_inserted.inc(123456)
    for reason in ("bad_checksum", "malformed", "unknown_unit", "duplicate", "void"):
        m.rejects.labels(reason).inc(17)
        m.dead_letters.labels(reason).inc(17)
    for kind in ("framed", "accepted", "merged", "corrected"):
        m.decoder_counts.labels(kind).inc(1000)
    m.receive_to_commit.observe_many(np.random.default_rng(1).exponential(0.05, 100_000))
    m.fix_to_commit.observe_many(np.random.default_rng(2).exponential(0.5, 100_000))
    return shell, m


def old_process_request(m: IngestMetrics):  # type: ignore[no-untyped-def]
    """The endpoint as it was in ingest/metrics.py before the web shell (the baseline)."""

    def process_request(_conn: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/metrics":
            body = m.render()
            headers = Headers(
                [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))]
            )
            return Response(200, "OK", headers, body)
        return None

    return process_request


async def _refuse(conn: ServerConnection) -> None:
    await conn.close()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(x[15:]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return length


async def scrape_new_connections(port: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await read_response(reader)
        writer.close()
        await writer.wait_closed()
        out.append(time.perf_counter() - t0)
    return out


async def scrape_keep_alive(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_response(reader)
        out.append(time.perf_counter() - t0)
    writer.close()
    await writer.wait_closed()
    return out


async def main(rounds: int, requests: int) -> dict[str, object]:
    shell, m = populated()
    web = open_web_server(shell, host="127.0.0.1", port=0)
    results: dict[str, list[float]] = {"websockets_old": [], "uvicorn": [], "uvicorn_keepalive": []}
    async with (
        serve(_refuse, "127.0.0.1", 0, process_request=old_process_request(m),
              server_header=None) as old,
        asyncio.TaskGroup() as tg,
    ):  # fmt: skip
        tg.create_task(web.serve())
        await web.wait_started()
        old_port = next(iter(old.sockets)).getsockname()[1]
        body = len(m.render())
        for _ in range(rounds):
            results["websockets_old"].append(
                statistics.median(await scrape_new_connections(old_port, requests))
            )
            results["uvicorn"].append(
                statistics.median(await scrape_new_connections(web.port, requests))
            )
            results["uvicorn_keepalive"].append(
                statistics.median(await scrape_keep_alive(web.port, requests))
            )
        web.request_stop()
    med = {k: statistics.median(v) * 1e3 for k, v in results.items()}
    return {
        "body_bytes": body,
        "rounds": rounds,
        "requests_per_round": requests,
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "per_round_median_ms": {k: [round(x * 1e3, 3) for x in v] for k, v in results.items()},
        "ratio_uvicorn_vs_old": round(med["uvicorn"] / med["websockets_old"], 2),
        "ratio_uvicorn_keepalive_vs_old": round(
            med["uvicorn_keepalive"] / med["websockets_old"], 2
        ),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=positive_int, default=7, help="alternating rounds per server")
    ap.add_argument(
        "--requests", type=positive_int, default=200, help="sequential scrapes per round"
    )
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.rounds, a.requests)), indent=2))
