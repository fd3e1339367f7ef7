"""Control-plane API latency: a real `flowyte serve` process, real HTTP, SQLite or PostgreSQL.

Measures per-operation latency (p50/p95/p99) for the agent lifecycle - create, read, patch with If-Match,
publish with an Idempotency-Key, diff, list - first one request at a time, then with concurrent clients.
Prints the figures, writes benchmarks/results/api_latency.json and a PNG plot beside it.

    .venv/bin/python benchmarks/api_latency.py [--requests 200] [--concurrency 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def flowyte(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "control_api.cli", *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


async def wait_ready(base: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < end:
            try:
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError("server did not become ready")


async def timed(samples: dict[str, list[float]], name: str, call: Any) -> httpx.Response:
    start = time.perf_counter()
    response: httpx.Response = await call
    samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)
    if response.status_code >= 400:
        raise RuntimeError(f"{name}: {response.status_code} {response.text}")
    return response


async def lifecycle(http: httpx.AsyncClient, samples: dict[str, list[float]], n: int) -> None:
    created = await timed(samples, "create agent", http.post("/agents", json={"name": f"Bench {n}"}))
    agent_id = created.json()["data"]["id"]
    await timed(samples, "get agent", http.get(f"/agents/{agent_id}"))
    await timed(samples, "patch agent (If-Match)", http.patch(
        f"/agents/{agent_id}", json={"greeting": "hello"}, headers={"If-Match": '"1"'}))
    published = await timed(samples, "publish (Idempotency-Key)", http.post(
        f"/agents/{agent_id}/publish", json={"note": "bench"}, headers={"Idempotency-Key": f"bench-{n}"}))
    version_id = published.json()["data"]["id"]
    await timed(samples, "diff", http.get(f"/agents/{agent_id}/versions/{version_id}/diff"))
    await timed(samples, "list agents", http.get("/agents", params={"limit": 20}))


async def measure(args: argparse.Namespace, base: str, key: str) -> dict[str, Any]:
    results: dict[str, Any] = {"database": "postgresql" if args.database_url else "sqlite", "phases": {}}
    await wait_ready(base)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", headers=headers, timeout=30) as http:
        for phase, concurrency in (("serial", 1), (f"concurrency {args.concurrency}", args.concurrency)):
            samples: dict[str, list[float]] = {}
            started = time.perf_counter()
            for batch in range(0, args.requests, concurrency):
                await asyncio.gather(*[lifecycle(http, samples, hash((phase, batch, i)))
                                       for i in range(concurrency)])
            elapsed = time.perf_counter() - started
            total = sum(len(v) for v in samples.values())
            results["phases"][phase] = {
                "requestsPerSecond": total / elapsed,
                "operations": {
                    name: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95),
                           "p99_ms": percentile(v, 99), "mean_ms": statistics.fmean(v), "n": len(v)}
                    for name, v in samples.items()
                },
            }
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="flowyte-bench-")
    env = {**os.environ, "FLOWYTE_DATA_DIR": data_dir, "FLOWYTE_RATE_LIMIT_PER_MINUTE": "1000000"}
    if args.database_url:
        env["FLOWYTE_DATABASE_URL"] = args.database_url
    key = flowyte("keys", "create", "--org", f"bench-{os.getpid()}", "--all-scopes", env=env)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "control_api.cli", "serve", "--http-port", str(port)], env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        return asyncio.run(measure(args, f"http://127.0.0.1:{port}", key))
    finally:
        server.terminate()
        server.wait(timeout=10)


def report(results: dict[str, Any]) -> None:
    print(f"control-plane API latency ({results['database']})")
    for phase, data in results["phases"].items():
        print(f"\n{phase}: {data['requestsPerSecond']:.0f} requests/s")
        print(f"  {'operation':28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for name, op in data["operations"].items():
            print(f"  {name:28} {op['p50_ms']:8.2f} {op['p95_ms']:8.2f} {op['p99_ms']:8.2f}")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(results["phases"])
    names = list(results["phases"][phases[0]]["operations"])
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / (2 * len(phases))
    for i, phase in enumerate(phases):
        ops = results["phases"][phase]["operations"]
        for j, (metric, alpha) in enumerate((("p50_ms", 1.0), ("p95_ms", 0.5))):
            offset = (2 * i + j) * width
            ax.bar([k + offset for k in range(len(names))], [ops[n][metric] for n in names], width,
                   alpha=alpha, label=f"{phase} {metric[:3]}")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names, rotation=20, ha="right")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Flowyte control-plane API latency ({results['database']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=120, help="agent lifecycles per phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    results = run(args)
    report(results)
    RESULTS.mkdir(exist_ok=True)
    suffix = results["database"]
    (RESULTS / f"api_latency_{suffix}.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / f"api_latency_{suffix}.png")
    print(f"\nwrote {RESULTS}/api_latency_{suffix}.json and .png")


if __name__ == "__main__":
    main()
