"""Latency of the offline speech models on this machine's CPU.

Whisper tiny.en and base (int8, greedy) on 1 s, 3 s and 6 s clips of espeak-ng speech (p50 and max over
--runs); Piper time to first chunk and real-time factor streaming to 8 kHz; Silero VAD cost per 20 ms frame
(and what a webrtcvad pre-gate would cost and let through); Smart Turn v3.2 latency on an 8 s window; and
each model's load time. Writes benchmarks/results/speech_models.json and speech_models.png.

    .venv/bin/python benchmarks/speech_models.py [--runs 5] [--data-dir .flowyte]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.speech.model_assets import prepare
from pipeline.speech.stt import WhisperSTT
from pipeline.speech.tts import PiperTTS, SynthesisStats
from pipeline.speech.turn import TurnDetector
from pipeline.speech.vad import SpeechDetector
from tests.peers.speech import speech_pcm

RESULTS = Path(__file__).parent / "results"
SPEECH = (
    "Hello, I would like to know what time you open on Saturday, and whether I need to book a table in "
    "advance for a group of six people, because last time we had to wait almost an hour."
)
REPLY = "Sure. We open at nine on Saturday. Tables for six can be booked online or by phone, up to a week ahead."


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(samples) * 1000, 1), "max_ms": round(max(samples) * 1000, 1)}


def bench_whisper(data_dir: Path, speech: NDArray[np.int16], runs: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in ("tiny.en", "base"):
        start = time.perf_counter()
        stt = WhisperSTT(name, data_dir, eager=True)  # type: ignore[arg-type]
        load = time.perf_counter() - start
        stt.transcribe(speech[:16000], "en")  # warm up
        clips: dict[str, object] = {}
        for seconds in (1, 3, 6):
            clip = speech[: seconds * 16000]
            samples = timed(lambda clip=clip, stt=stt: stt.transcribe(clip, "en"), runs)  # type: ignore[misc]
            clips[f"{seconds}s"] = {**summary(samples), "rtf": round(statistics.median(samples) / seconds, 3)}
            print(f"whisper {name:<8} {seconds} s clip  p50 {clips[f'{seconds}s']['p50_ms']:>7.1f} ms")  # type: ignore[index]
        out[name] = {"load_ms": round(load * 1000, 1), "clips": clips}
    return out


def bench_piper(runs: int) -> dict[str, object]:
    start = time.perf_counter()
    tts = PiperTTS()
    load = time.perf_counter() - start
    list(tts.synthesize("Warm up."))

    async def one() -> SynthesisStats:
        stats = SynthesisStats()
        async for _ in tts.stream(REPLY, 8000, stats):
            pass
        return stats

    all_stats = [asyncio.run(one()) for _ in range(runs)]
    first = [s.first_chunk_s or 0.0 for s in all_stats]
    rtf = [s.real_time_factor for s in all_stats]
    result = {
        "load_ms": round(load * 1000, 1),
        "text": REPLY,
        "first_chunk": summary(first),
        "rtf_p50": round(statistics.median(rtf), 3),
        "audio_s": round(statistics.median(s.audio_s for s in all_stats), 2),
        "chunks": all_stats[0].chunks,
    }
    print(f"piper time to first chunk p50 {result['first_chunk']['p50_ms']:.1f} ms, RTF {result['rtf_p50']:.3f}")  # type: ignore[index]
    return result


def bench_vad(speech: NDArray[np.int16]) -> dict[str, object]:
    import webrtcvad

    frames = [speech[i : i + 320] for i in range(0, len(speech) - 319, 320)]
    start = time.perf_counter()
    detector = SpeechDetector()
    load = time.perf_counter() - start
    n = 0
    start = time.perf_counter()
    for _ in range(5):
        for frame in frames:
            detector.feed(frame)
            n += 1
    per_frame = (time.perf_counter() - start) / n

    async def hop() -> float:
        t0 = time.perf_counter()
        for frame in frames:
            await detector.feed_async(frame)
        return (time.perf_counter() - t0) / len(frames)

    per_frame_async = asyncio.run(hop())
    gate = webrtcvad.Vad(2)
    raw = [f.tobytes() for f in frames]
    start = time.perf_counter()
    for _ in range(5):
        for f in raw:
            gate.is_speech(f, 16000)
    webrtc = (time.perf_counter() - start) / (5 * len(raw))
    rng = np.random.default_rng(0)
    passed = {}
    for level in (30, 100, 1000):
        noise = np.rint(rng.normal(0, level, 16000 * 5)).astype(np.int16)
        chunks = [noise[i : i + 320].tobytes() for i in range(0, len(noise), 320)]
        passed[f"white_noise_rms_{level}"] = round(sum(gate.is_speech(c, 16000) for c in chunks) / len(chunks), 3)
    result = {
        "load_ms": round(load * 1000, 1),
        "silero_us_per_20ms_frame": round(per_frame * 1e6, 1),
        "silero_us_per_frame_via_thread": round(per_frame_async * 1e6, 1),
        "webrtcvad_us_per_frame": round(webrtc * 1e6, 2),
        "webrtcvad_fraction_called_speech": passed,
    }
    print(
        f"silero {result['silero_us_per_20ms_frame']} µs/frame inline, {result['silero_us_per_frame_via_thread']} "
        f"µs/frame via its thread; webrtcvad {result['webrtcvad_us_per_frame']} µs/frame, calls noise speech: {passed}"
    )
    return result


def bench_turn(speech: NDArray[np.int16], runs: int) -> dict[str, object]:
    start = time.perf_counter()
    turn = TurnDetector()
    load = time.perf_counter() - start
    clip = speech[: 8 * 16000]
    turn.predict(clip)
    samples = timed(lambda: turn.predict(clip), runs * 2)
    result = {"load_ms": round(load * 1000, 1), "predict": summary(samples)}
    print(f"smart turn predict p50 {result['predict']['p50_ms']:.1f} ms")  # type: ignore[index]
    return result


def plot(doc: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    whisper: dict[str, dict[str, dict[str, dict[str, float]]]] = doc["whisper"]  # type: ignore[assignment]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for k, name in enumerate(("tiny.en", "base")):
        clips = whisper[name]["clips"]
        xs = np.arange(len(clips)) + (k - 0.5) * width
        values = [clips[c]["p50_ms"] for c in clips]
        left.bar(xs, values, width, label=f"whisper {name}")
        for x, v in zip(xs, values, strict=True):
            left.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    left.set_xticks(np.arange(3), ["1 s", "3 s", "6 s"])
    left.set_ylabel("ms (p50)")
    left.set_title("Whisper int8 latency by clip length")
    left.legend()
    piper: dict[str, dict[str, float]] = doc["piper"]  # type: ignore[assignment]
    turn: dict[str, dict[str, float]] = doc["smart_turn"]  # type: ignore[assignment]
    vad: dict[str, float] = doc["vad"]  # type: ignore[assignment]
    names = ["piper first chunk", "smart turn (8 s)", "silero / 20 ms frame"]
    values = [piper["first_chunk"]["p50_ms"], turn["predict"]["p50_ms"], vad["silero_us_per_20ms_frame"] / 1000]
    right.barh(names, values, color=["tab:green", "tab:purple", "tab:gray"])
    for y, v in enumerate(values):
        right.text(v, y, f" {v:.2f} ms", va="center")
    right.set_xlabel("ms (p50)")
    right.set_title("TTS, turn and VAD latency")
    right.invert_yaxis()
    right.set_xlim(0, max(values) * 1.35)
    fig.tight_layout()
    fig.savefig(RESULTS / "speech_models.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FLOWYTE_DATA_DIR", ".flowyte")))
    args = parser.parse_args()

    prepare(args.data_dir)
    speech = speech_pcm(SPEECH, 16000)
    assert len(speech) >= 8 * 16000, "the benchmark speech must last at least 8 s"
    doc: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "runs": args.runs,
        "whisper": bench_whisper(args.data_dir, speech, args.runs),
        "piper": bench_piper(args.runs),
        "vad": bench_vad(speech),
        "smart_turn": bench_turn(speech, args.runs),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speech_models.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    plot(doc)
    print(f"wrote {RESULTS / 'speech_models.json'} and speech_models.png")


if __name__ == "__main__":
    main()
