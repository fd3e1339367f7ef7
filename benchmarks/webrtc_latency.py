"""In-browser voice sessions over WebRTC: offer-to-connected time and voice-to-voice latency, on loopback.

A real `flowyte serve` (its own process; SQLite in a temporary data dir, the bundled models, no SIP; ICE host
candidates on 127.0.0.1 only) answers an agent that knows its opening hours. The caller is an aiortc peer
(tests/peers/webrtc_caller.py: Opus, a data channel, a real WebRTC stack like a browser's) in this process:

1. Offer to connected: the offer is POSTed with a fresh talk token -> the answer arrives (HTTP, with ICE
   gathering on the server) -> the caller's peer connection is `connected` (ICE + DTLS) -> the server's
   `ready` message on the data channel (its session has started).
2. Voice to voice: each session asks a few questions (espeak-ng, 16 kHz) with silence between them; per
   question, the last frame of speech leaving the caller -> the first chunk of the agent's audio louder than
   -35 dBFS arriving (after Opus both ways and the server's jitter handling).

Prints the figures, writes benchmarks/results/webrtc_latency.json and webrtc_latency.png. Reported, never
asserted.

    .venv/bin/python benchmarks/webrtc_latency.py [--sessions 5] [--questions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from voice_latency import stats  # the benchmarks folder, on the path above

from pipeline.llm.model_assets import link_assembled
from telephony import webrtc
from tests.peers.speech import speech_pcm
from tests.peers.webrtc_caller import WebRtcCaller

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RATE = 16000
FACT = (
    "Tony's Pizza opens at eleven in the morning and closes at ten at night, every day. We deliver within "
    "three miles. A large pepperoni pizza costs eighteen dollars."
)
QUESTIONS = (
    "What time do you open on Saturday?",
    "Do you deliver to the airport?",
    "How much is a large pepperoni pizza?",
    "When do you close tonight?",
    "Do you have any vegan options?",
)
GREETING_S, GAP_S = 3.0, 7.0  # silence before the first question (the greeting plays), and between questions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def script(count: int) -> tuple[np.ndarray[Any, Any], list[float]]:
    """The caller's audio for one session, and where each question's speech ends (seconds into it)."""
    parts, ends, at = [np.zeros(int(GREETING_S * RATE), np.int16)], [], GREETING_S
    for n in range(count):
        speech = speech_pcm(QUESTIONS[n % len(QUESTIONS)], RATE)
        loud = np.flatnonzero(np.abs(speech) > 300)
        speech = speech[: (loud[-1] + 1) if len(loud) else len(speech)]  # ends at its last sound
        parts += [speech, np.zeros(int(GAP_S * RATE), np.int16)]
        at += len(speech) / RATE
        ends.append(at)
        at += GAP_S
    return np.concatenate(parts), ends


class Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.data_dir = workdir / "data"
        link_assembled(ROOT / ".flowyte", self.data_dir)
        self.env = {**os.environ, "FLOWYTE_DATA_DIR": str(self.data_dir), "FLOWYTE_DATABASE_URL": "",
                    "FLOWYTE_WEBRTC_HOST_ADDRESSES": "127.0.0.1"}  # fmt: skip
        self.bin = str(Path(sys.executable).parent / "flowyte")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        create = [self.bin, "keys", "create", "--org", "bench", "--all-scopes", "--data-dir", str(self.data_dir)]
        made = subprocess.run(create, capture_output=True, text=True, env=self.env, check=True)
        found = re.search(r"flowyte_sk_\S+", made.stdout + made.stderr)
        assert found is not None
        log = (self.workdir / "server.log").open("w")
        self.process = subprocess.Popen(
            [self.bin, "serve", "--data-dir", str(self.data_dir), "--http-port", str(self.port), "--sip-port", "off"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        return found.group(0)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


async def session(api: httpx.AsyncClient, agent_id: str, questions: int) -> dict[str, Any]:
    token = (await api.post(f"/agents/{agent_id}/talk-token", json={"draftMode": True})).json()["data"]
    audio, ends = script(questions)
    caller = WebRtcCaller(audio)
    try:
        offered = time.perf_counter()
        offer = {"type": "offer", "sdp": await caller.offer()}
        path, auth = token["url"].split("/api/v1", 1)[1], {"Authorization": f"Bearer {token['token']}"}
        answer = await api.post(path, json=offer, headers=auth)
        answered = time.perf_counter()
        answer.raise_for_status()
        await caller.accept(answer.json()["data"]["sdp"])
        connected_at: float | None = None
        while connected_at is None and time.perf_counter() - offered < 15:
            if caller.pc.connectionState == "connected":
                connected_at = time.perf_counter()
            await asyncio.sleep(0.002)
        await caller.until(lambda: any(m["type"] == "ready" for m in caller.messages), within=15)
        ready_at = time.perf_counter()
        await caller.until(lambda: caller.speech.start is not None, within=5)
        total_s = len(audio) / RATE
        await asyncio.sleep(total_s - 1.0)
        started = caller.speech.started_at
        assert started is not None
        turns = []
        for end_s in ends:
            spoke_end = started + end_s
            heard = caller.loud_since(spoke_end)
            v2v = 1000 * (heard - spoke_end) if heard is not None and heard - spoke_end < GAP_S else None
            turns.append(v2v)
        caller.hang_up()
        await asyncio.sleep(0.5)
    finally:
        await caller.close()
    return {
        "offer_to_answer_ms": 1000 * (answered - offered),
        "offer_to_connected_ms": 1000 * (connected_at - offered) if connected_at else None,
        "offer_to_ready_ms": 1000 * (ready_at - offered),
        "v2v_ms": turns,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    webrtc.use_host_addresses(["127.0.0.1"])  # the caller's candidates too: loopback only
    workdir = Path(tempfile.mkdtemp(prefix="flowyte-webrtc-latency-"))
    server = Server(workdir)
    secret = server.start()
    started = time.perf_counter()
    try:
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1", headers=headers,
                                     timeout=60) as api:  # fmt: skip
            for _ in range(600):
                try:
                    await api.get("/agents")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            body = {"name": "Tony's Pizza", "greeting": "Hi, this is Tony's Pizza.",
                    "persona": {"role": "You are the friendly assistant of Tony's Pizza."}}  # fmt: skip
            agent = (await api.post("/agents", json=body)).json()["data"]
            sources = f"/agents/{agent['id']}/knowledge/sources"
            source = (await api.post(sources, json={"kind": "text", "label": "Facts", "text": FACT})).json()["data"]
            for _ in range(600):
                if (await api.get(f"{sources}/{source['id']}")).json()["data"]["status"] in ("indexed", "error"):
                    break
                await asyncio.sleep(0.1)
            print("... warm-up session (not counted)")
            await session(api, agent["id"], 1)
            sessions = []
            for n in range(args.sessions):
                result = await session(api, agent["id"], args.questions)
                print(f"    session {n + 1}/{args.sessions}: connected in {result['offer_to_connected_ms']:.0f} ms, "
                      f"v2v ms {', '.join('-' if v is None else f'{v:.0f}' for v in result['v2v_ms'])}")  # fmt: skip
                sessions.append(result)
    finally:
        server.stop()
    v2v = [v for s in sessions for v in s["v2v_ms"] if v is not None]
    return {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "sessions": sessions,
        "offer_to_answer_ms": stats([s["offer_to_answer_ms"] for s in sessions]),
        "offer_to_connected_ms": stats([s["offer_to_connected_ms"] for s in sessions if s["offer_to_connected_ms"]]),
        "offer_to_ready_ms": stats([s["offer_to_ready_ms"] for s in sessions]),
        "v2v_ms": stats(v2v),
        "unanswered": sum(v is None for s in sessions for v in s["v2v_ms"]),
        "elapsed_s": time.perf_counter() - started,
        "workdir": str(workdir),
    }


def report(results: dict[str, Any]) -> None:
    print(f"\nin-browser voice sessions over WebRTC on loopback, {results['machine']['cores']} cores")
    for key, label in (("offer_to_answer_ms", "offer -> SDP answer (HTTP)"),
                       ("offer_to_connected_ms", "offer -> connected (ICE+DTLS)"),
                       ("offer_to_ready_ms", "offer -> session ready"), ("v2v_ms", "voice-to-voice")):  # fmt: skip
        s = results[key]
        print(f"  {label:32} p50 {s['p50']:7.0f}  p95 {s['p95']:7.0f}  min {s['min']:6.0f}  max {s['max']:6.0f}  "
              f"(n={s['n']})")  # fmt: skip
    print(f"  questions without an answer within {GAP_S:.0f} s: {results['unanswered']}")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist([v for s in results["sessions"] for v in s["v2v_ms"] if v is not None], bins=15, color="tab:blue")
    left.set(xlabel="ms", ylabel="questions", title="WebRTC voice-to-voice")
    right.bar(["answer", "connected", "ready"], [results[k]["p50"] for k in
              ("offer_to_answer_ms", "offer_to_connected_ms", "offer_to_ready_ms")], color="tab:green")  # fmt: skip
    right.set(ylabel="ms (p50)", title="from the offer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--questions", type=int, default=4)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webrtc_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "webrtc_latency.png")
    print(f"\nran {results['elapsed_s']:.0f} s; server log in {results['workdir']}")


if __name__ == "__main__":
    main()
