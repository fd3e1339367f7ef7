"""Speech to text with faster-whisper over the bundled CTranslate2 Whisper models.

One model is loaded per (model name, process) and shared by every `WhisperSTT` using that name; each loaded
model owns exactly one worker thread (`ThreadPoolExecutor(max_workers=1)`), so concurrent utterances queue
instead of thrashing two cores with competing inference. `transcribe()` is synchronous (CPU-bound, for that
thread or for tools); `transcribe_async()` hands the work to the model's thread and never blocks the loop.

Decoding is tuned for short, endpointed telephone turns: greedy (beam 1), no conditioning on previous
text, no Silero filter inside faster-whisper (our own VAD has already cut the turn), no timestamps, and a
bound on the tokens a turn can need. A turn is encoded over the shortest of `encoder_windows` it fits (10 s,
else 15 s, for tiny.en) instead of Whisper's 30 s (`whisper_window`): 15 s was about twice as fast as 30 s, and
10 s takes another ~60 ms (a quarter) off a phone turn here; longer turns take faster-whisper's full path. A
decode that looks cut short or stuck repeating itself (`WindowResult.looped`: tiny.en over 10 s wrote "When I open
on Saturday, when I open on Saturday, ..." to the token bound for one question in calls) is done again over the
next window.
English uses tiny.en; any other language uses the multilingual base model (joined by `model_assets`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.cores import CORES
from pipeline.speech.loaded import Loaded
from pipeline.speech.model_assets import WhisperName, whisper_model_dir
from pipeline.speech.whisper_window import decode, fits, looks_cut_short, max_new_tokens, speech_seconds

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before faster_whisper imports huggingface_hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SAMPLE_RATE = 16000
# The short windows per model, in 10 ms frames (3000, Whisper's own, turns them off); benchmarks/stt_window.py, 80
# phone-band turns per voice. tiny.en over 10 s: word error rate 7.2 % vs 6.5 % over 15 s with Piper's voice (the
# runs' noise is larger), 51.9 % vs 52.8 % with espeak-ng's; p50 197 vs 257 ms, p95 289 vs 340 ms; 1 and 2 turns
# decoded again (7.5 s was worse: 9.2 %, 10 of 80 decoded again). base over 10 s cut 1 and 4 turns short where 15 s
# cut none, so base keeps 15 s.
ENCODER_WINDOWS: dict[WhisperName, tuple[int, ...]] = {"tiny.en": (1000, 1500), "base": (1500,)}


def default_cpu_threads() -> int:
    """Intra-op threads for one model: every core up to four (two on the reference 2-core box)."""
    return max(1, min(4, os.cpu_count() or 1))


def model_for_language(language: str | None) -> WhisperName:
    """English (`en`, `en-US`, `en_GB` …) → tiny.en; any other language, or unknown (`None`) → base."""
    if language is not None and language.replace("_", "-").split("-")[0].lower() == "en":
        return "tiny.en"
    return "base"


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_s: float  # duration of the audio transcribed
    elapsed_s: float  # wall time of the transcription (excludes waiting for the worker thread)
    encoder_frames: int = 3000  # the encoder window of the decode kept (3000: faster-whisper's full path)


class _LoadedModel:
    """A faster-whisper model and its single worker thread; created once per (name, data_dir)."""

    def __init__(self, name: WhisperName, data_dir: Path, cpu_threads: int) -> None:
        self.name = name
        self.path = whisper_model_dir(name, data_dir)
        self.cpu_threads = cpu_threads
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"whisper-{name}")
        self._model: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(
                    str(self.path),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.cpu_threads,
                    num_workers=1,
                    local_files_only=True,
                )
            return self._model


_models: Loaded[_LoadedModel] = Loaded(_LoadedModel)


def _as_float32(pcm16k: NDArray[np.int16] | NDArray[np.float32]) -> NDArray[np.float32]:
    audio = np.asarray(pcm16k)
    if audio.ndim != 1:
        raise ValueError(f"expected mono PCM, got shape {audio.shape}")
    if audio.dtype == np.int16:
        return (audio.astype(np.float32) / 32768.0).astype(np.float32)
    return audio.astype(np.float32, copy=False)


class WhisperSTT:
    """Transcribes 16 kHz mono turns; cheap to create (the model itself is shared per process)."""

    def __init__(
        self,
        name: WhisperName,
        data_dir: Path,
        *,
        initial_prompt: str | None = None,
        hotwords: str | None = None,
        eager: bool = False,
        cpu_threads: int | None = None,
        encoder_windows: tuple[int, ...] | None = None,
    ) -> None:
        self.name = name
        # a turn is encoded over the first of these it fits
        self.encoder_windows = tuple(sorted(ENCODER_WINDOWS[name] if encoder_windows is None else encoder_windows))
        self.initial_prompt = initial_prompt  # domain words/spelling examples decoded as preceding context
        self.hotwords = hotwords  # boosted words (faster-whisper prefixes them when there is no prompt)
        threads = cpu_threads or default_cpu_threads()
        self._model = _models.get((name, Path(data_dir).resolve()), name, Path(data_dir), threads)
        if eager:
            self._model.get()

    @classmethod
    def for_language(cls, language: str | None, data_dir: Path, **kwargs: Any) -> WhisperSTT:
        return cls(model_for_language(language), data_dir, **kwargs)

    @property
    def model_dir(self) -> Path:
        return self._model.path

    def load(self) -> None:
        """Load the model now (otherwise the first transcription does)."""
        self._model.get()

    def transcribe(self, pcm16k: NDArray[np.int16] | NDArray[np.float32], language: str | None = None) -> Transcript:
        """Transcribe one turn of 16 kHz mono PCM (int16, or float32 in [-1, 1]); blocks for the inference."""
        audio = _as_float32(pcm16k)
        if self.name == "tiny.en":
            language = "en"
        elif language is not None:
            language = language.replace("_", "-").split("-")[0].lower()
        model = self._model.get()
        with CORES.urgent():  # a caller waits for every transcript: the LLM holds back (pipeline/cores.py)
            return self._transcribe(model, audio, language)

    def _transcribe(self, model: Any, audio: NDArray[np.float32], language: str | None) -> Transcript:
        start = time.perf_counter()
        window, frames, speech_s = None, 0, speech_seconds(audio)
        for frames in (f for f in self.encoder_windows if fits(len(audio), f)):
            window = decode(
                model,
                audio,
                frames,
                language=language,
                initial_prompt=self.initial_prompt,
                hotwords=self.hotwords,
            )
            if window.no_speech or not (window.looped or looks_cut_short(window.text, speech_s)):
                break
            window = None  # stopped early, or stuck repeating itself: decode again over the next window
        if window is not None:
            text, detected = window.text, window.language
        else:
            (text, detected), frames = self._transcribe_full(model, audio, language), 3000
        return Transcript(
            text=text,
            language=detected,
            audio_s=len(audio) / SAMPLE_RATE,
            elapsed_s=time.perf_counter() - start,
            encoder_frames=frames,
        )

    def _transcribe_full(self, model: Any, audio: NDArray[np.float32], language: str | None) -> tuple[str, str]:
        """faster-whisper's own path: the 30 s window (and more windows for longer audio)."""
        segments, info = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
            initial_prompt=self.initial_prompt,
            hotwords=self.hotwords,
            # per 30 s window; under half of Whisper's 448 positions, as the prompt may take the other half
            max_new_tokens=min(200, max_new_tokens(len(audio) / SAMPLE_RATE)),
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()  # the generator runs the decoding
        return text, str(info.language)

    async def transcribe_async(
        self, pcm16k: NDArray[np.int16] | NDArray[np.float32], language: str | None = None
    ) -> Transcript:
        """`transcribe` on the model's single worker thread (calls from every session queue there)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model.executor, self.transcribe, pcm16k, language)
