"""Per-20 ms-frame cost of the media kernels on one core.

Measures μ-law decode/encode (160 samples), streaming resampling (8 -> 16 kHz, 16 -> 8 kHz, 22.05 -> 8 kHz,
48 -> 16 kHz), Goertzel DTMF detection over a decoded frame, and a jitter-buffer push + pop. Each kernel runs in
a timed loop of whole frames; the figure is the median of several repeats. Prints µs/frame and frames/s per
core (how many concurrent call legs one core could carry for that kernel alone), and writes
benchmarks/results/media_kernels.json and media_kernels.png.

    .venv/bin/python benchmarks/media_kernels.py [--frames 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from telephony.codecs.g711 import ulaw_decode, ulaw_encode
from telephony.codecs.resample import StreamingResampler
from telephony.inband_dtmf import DtmfDetector
from telephony.rtp.jitter import JitterBuffer

RESULTS = Path(__file__).parent / "results"


def time_per_frame(step: Callable[[int], object], frames: int, repeats: int) -> float:
    """Median seconds per call of ``step(i)`` over ``repeats`` runs of ``frames`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(frames):
            step(i)
        runs.append((time.perf_counter() - start) / frames)
    return statistics.median(runs)


def kernels() -> dict[str, Callable[[int], object]]:
    rng = np.random.default_rng(0)
    pcm8 = np.rint(rng.normal(0, 4000, 160)).astype(np.int16)
    ulaw = ulaw_encode(pcm8)
    pcm16 = np.rint(rng.normal(0, 4000, 320)).astype(np.int16)
    pcm22 = np.rint(rng.normal(0, 4000, 441)).astype(np.int16)
    pcm48 = np.rint(rng.normal(0, 4000, 960)).astype(np.int16)
    up, down = StreamingResampler(8000, 16000), StreamingResampler(16000, 8000)
    tts, webrtc = StreamingResampler(22050, 8000), StreamingResampler(48000, 16000)
    detector = DtmfDetector()
    jb = JitterBuffer()
    payload = ulaw

    def jitter(i: int) -> object:
        jb.push(i & 0xFFFF, (160 * i) & 0xFFFFFFFF, payload, i * 0.02 + 0.05)
        return jb.pop(i * 0.02 + 0.06)

    return {
        "ulaw_decode": lambda i: ulaw_decode(ulaw),
        "ulaw_encode": lambda i: ulaw_encode(pcm8),
        "resample_8k_to_16k": lambda i: up.process(pcm8),
        "resample_16k_to_8k": lambda i: down.process(pcm16),
        "resample_22k05_to_8k": lambda i: tts.process(pcm22),
        "resample_48k_to_16k": lambda i: webrtc.process(pcm48),
        "dtmf_goertzel": lambda i: detector.process(pcm8),
        "jitter_push_pop": jitter,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    results = {}
    print(f"{'kernel':<24}{'µs/frame':>10}{'frames/s/core':>16}")
    for name, step in kernels().items():
        step(0)  # warm up
        per = time_per_frame(step, args.frames, args.repeats)
        results[name] = {"us_per_frame": round(per * 1e6, 3), "frames_per_s_per_core": round(1 / per)}
        print(f"{name:<24}{per * 1e6:>10.2f}{1 / per:>16,.0f}")
    realtime = sum(r["us_per_frame"] for r in results.values())
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "frame": "20 ms (160 samples at 8 kHz)",
        "frames": args.frames,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "kernels": results,
    }
    (RESULTS / "media_kernels.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"sum of all kernels: {realtime:.1f} µs per 20 ms frame ({realtime / 200:.2f}% of one core per call)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    values = [results[n]["us_per_frame"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, values, color="tab:blue")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.1f} µs", va="center")
    ax.set_xlabel("µs per 20 ms frame (one core, median)")
    ax.set_title("flowyte media kernels")
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.25)
    fig.tight_layout()
    fig.savefig(RESULTS / "media_kernels.png", dpi=120)
    print(f"wrote {RESULTS / 'media_kernels.json'} and media_kernels.png")


if __name__ == "__main__":
    main()
