"""Whisper's encoder window: accuracy and latency of 3000 frames (faster-whisper's 30 s) against shorter ones.

Every labelled utterance of benchmarks/tool_routing.py (its tuning set and its held-out set) and the
questions of benchmarks/voice_latency.py, spoken by two voices: Piper's en_US-joe-medium (a natural voice)
and espeak-ng (robotic; tiny.en mishears much of it, but it is the caller voice of the peer tests). Each is
taken through the phone band (8 kHz, back up to 16 kHz) and framed like a VAD segment (0.3 s of pre-roll,
0.5 s of trailing silence), then transcribed by `WhisperSTT` over each window (`encoder_windows`). Prints, per voice
and window, the word error rate against the text, how many turns came out much shorter than with 3000
frames (a cut-off turn, the failure to watch for), how many short-window decodes were redone over the
full window (`whisper_window.looks_cut_short`), and the transcription latency p50/p95; writes
benchmarks/results/stt_window.json and stt_window.png.

    .venv/bin/python benchmarks/stt_window.py [--windows 3000 1500 1000] [--model tiny.en] [--data-dir .flowyte]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import soxr
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tool_routing import CASES, HELD_OUT  # the benchmarks folder, on the path above
from voice_latency import QUESTIONS

from pipeline.speech.model_assets import prepare
from pipeline.speech.stt import WhisperSTT
from pipeline.speech.tts import PiperTTS
from tests.peers.speech import speech_pcm

RESULTS = Path(__file__).parent / "results"
PHONE_RATE = 8000


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower().replace("-", " ")).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(Levenshtein distance over words, reference length)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            above = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1]))
            diagonal = above
    return row[len(hyp)], len(ref)


def as_segment(pcm8k: NDArray[np.int16]) -> NDArray[np.int16]:
    """Phone-band audio as `WhisperSTTService` hands it to Whisper: 16 kHz, pre-roll and trailing pad."""
    pcm16k = np.asarray(soxr.resample(pcm8k, PHONE_RATE, 16000, quality="HQ"), dtype=np.int16)
    return np.concatenate([np.zeros(4800, np.int16), pcm16k, np.zeros(8000, np.int16)])


def utterances(piper: PiperTTS) -> list[tuple[str, str, NDArray[np.int16]]]:
    texts = [text for text, _ in CASES + HELD_OUT] + list(QUESTIONS)
    out = []
    for text in texts:
        native = np.concatenate(list(piper.synthesize(text)))
        joe = np.asarray(soxr.resample(native, piper.sample_rate, PHONE_RATE, quality="HQ"), dtype=np.int16)
        out.append(("piper", text, as_segment(joe)))
    out += [("espeak", text, as_segment(speech_pcm(text, PHONE_RATE))) for text in texts]
    return out


def run(model: str, windows: list[int], data_dir: Path) -> dict[str, object]:
    speech = utterances(PiperTTS())
    stts = {frames: WhisperSTT(model, data_dir, eager=True, encoder_windows=(frames,)) for frames in windows}  # type: ignore[arg-type]
    reference_window = max(windows)
    rows: list[dict[str, object]] = []
    for voice, text, pcm in speech:
        row: dict[str, object] = {"voice": voice, "text": text, "audio_s": round(len(pcm) / 16000, 2)}
        for frames, stt in stts.items():
            start = time.perf_counter()
            heard = stt.transcribe(pcm)
            took = round((time.perf_counter() - start) * 1000, 1)
            row[str(frames)] = {"text": heard.text, "ms": took, "full_window": heard.encoder_frames == 3000}
        rows.append(row)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for voice in ("piper", "espeak"):
        mine = [r for r in rows if r["voice"] == voice]
        for frames in windows:
            got = [r[str(frames)] for r in mine]
            errors = [word_errors(str(r["text"]), g["text"]) for r, g in zip(mine, got, strict=True)]  # type: ignore[index]
            full = [words(r[str(reference_window)]["text"]) for r in mine]  # type: ignore[index]
            cut = sum(len(words(g["text"])) < 0.75 * len(f) for g, f in zip(got, full, strict=True))  # type: ignore[index]
            ms = [float(g["ms"]) for g in got]  # type: ignore[index]
            summary.setdefault(voice, {})[str(frames)] = {
                "decoded_again": sum(bool(g["full_window"]) for g in got) if frames < 3000 else 0,  # type: ignore[index]
                "wer": round(sum(e for e, _ in errors) / sum(n for _, n in errors), 4),
                "cut_short": cut,
                "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p95_ms": round(float(np.percentile(ms, 95)), 1),
                "max_ms": round(max(ms), 1),
            }
    return {"model": model, "windows": windows, "turns_per_voice": len(rows) // 2, "summary": summary, "rows": rows}


def plot(doc: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, dict[str, dict[str, float]]] = doc["summary"]  # type: ignore[assignment]
    windows = [str(w) for w in doc["windows"]]  # type: ignore[attr-defined]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for k, voice in enumerate(summary):
        xs = np.arange(len(windows)) + (k - 0.5) * width
        left.bar(xs, [summary[voice][w]["wer"] * 100 for w in windows], width, label=voice)
        right.bar(xs, [summary[voice][w]["p50_ms"] for w in windows], width, label=f"{voice} p50")
    for axis, label in ((left, "word error rate (%)"), (right, "transcription ms (p50)")):
        axis.set_xticks(np.arange(len(windows)), [f"{w} frames" for w in windows])
        axis.set_ylabel(label)
        axis.legend()
    left.set_title(f"Whisper {doc['model']}: accuracy by encoder window")
    right.set_title("latency by encoder window")
    fig.tight_layout()
    fig.savefig(RESULTS / "stt_window.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[3000, 1500, 1000])
    parser.add_argument("--model", default="tiny.en", choices=["tiny.en", "base"])
    parser.add_argument("--data-dir", type=Path, default=Path(".flowyte"))
    args = parser.parse_args()
    prepare(args.data_dir)
    doc = run(args.model, sorted(args.windows, reverse=True), args.data_dir)
    doc["machine"] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    summary: dict[str, dict[str, dict[str, float]]] = doc["summary"]  # type: ignore[assignment]
    print(f"Whisper {args.model}, {doc['turns_per_voice']} turns per voice, phone band")
    for voice, by_window in summary.items():
        for frames, s in by_window.items():
            print(
                f"  {voice:7} {frames:>5} frames: WER {s['wer'] * 100:5.1f} %  cut short {s['cut_short']:2}  "
                f"decoded again {s['decoded_again']:2}  "
                f"p50 {s['p50_ms']:6.0f} ms  p95 {s['p95_ms']:6.0f} ms  max {s['max_ms']:6.0f} ms"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stt_window.json").write_text(json.dumps(doc, indent=1))
    plot(doc)


if __name__ == "__main__":
    main()
