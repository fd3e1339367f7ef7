"""Text to speech with Piper and the bundled en_US-joe-medium voice (22,050 Hz mono).

The voice is loaded once per process and owns one worker thread: espeak-ng phonemization inside Piper keeps
global state, and one synthesis at a time is also what two cores can afford. Piper synthesizes a sentence at
a time, so `synthesize()` yields one int16 chunk per sentence at the native rate and the time to first chunk
is the time of the first sentence (keep the opening sentence of an answer short).

`stream(text, rate)` runs that iterator on the worker thread and yields chunks resampled to `rate` through a
single soxr stream per utterance, so sentence boundaries carry the filter state and do not click; the last
chunk flushes the resampler. Closing the async iterator early (barge-in) stops synthesis after the sentence
in progress. Chunks wait in a per-utterance queue bounded by the text itself (one entry per sentence); the
worker never blocks on it, so a slow listener cannot hold the shared thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from numpy.typing import NDArray

from pipeline.cores import CORES
from pipeline.speech.loaded import Loaded, onnx_session
from pipeline.speech.model_assets import piper_voice_path

VOLUME = 0.9  # Piper peak-normalizes each sentence; leave headroom for resampler overshoot


@dataclass
class SynthesisStats:
    """Filled in by `PiperTTS.stream` as it goes (seconds, wall clock from the call)."""

    first_chunk_s: float | None = None
    elapsed_s: float = 0.0
    audio_s: float = 0.0
    chunks: int = 0

    @property
    def real_time_factor(self) -> float:
        """Synthesis time over audio time (below 1 is faster than real time)."""
        return self.elapsed_s / self.audio_s if self.audio_s else 0.0


class ChunkResampler:
    """Streaming int16 resampler (one soxr stream): feed chunks in order, `last=True` flushes the tail."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")

    def process(self, chunk: NDArray[np.int16], *, last: bool = False) -> NDArray[np.int16]:
        if self._stream is None:
            return np.asarray(chunk, dtype=np.int16)
        return np.asarray(self._stream.resample_chunk(np.asarray(chunk, dtype=np.int16), last=last), dtype=np.int16)


class _LoadedVoice:
    def __init__(self, model_path: Path, cpu_threads: int) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        config = json.loads(model_path.with_name(model_path.name + ".json").read_text(encoding="utf-8"))
        self.voice = PiperVoice(session=onnx_session(model_path, cpu_threads), config=PiperConfig.from_dict(config))
        self.sample_rate = int(self.voice.config.sample_rate)
        self.syn_config = SynthesisConfig(volume=VOLUME)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")


_voices: Loaded[_LoadedVoice] = Loaded(_LoadedVoice)


class PiperTTS:
    """Sentence-streaming Piper synthesis; instances share the process's one voice and worker thread."""

    def __init__(self, model_path: Path | None = None, *, cpu_threads: int | None = None) -> None:
        threads = cpu_threads or max(1, min(4, os.cpu_count() or 1))
        path = Path(model_path or piper_voice_path()).resolve()
        self._voice = _voices.get(path, path, threads)

    @property
    def sample_rate(self) -> int:
        """The voice's native rate (22,050 Hz for en_US-joe-medium)."""
        return self._voice.sample_rate

    def synthesize(self, text: str) -> Iterator[NDArray[np.int16]]:
        """One int16 chunk per sentence at `sample_rate`, as each is synthesized (blocking; not thread-safe)."""
        for chunk in self._voice.voice.synthesize(text, syn_config=self._voice.syn_config):
            audio: Any = chunk.audio_int16_array
            yield np.asarray(audio, dtype=np.int16).reshape(-1)

    async def stream(
        self, text: str, rate: int, stats: SynthesisStats | None = None, *, urgent: bool = False
    ) -> AsyncIterator[NDArray[np.int16]]:
        """Int16 chunks at `rate` Hz (8000 or 16000, or the native rate), synthesized on the voice's thread.

        `urgent`: a caller is waiting for this audio (a reply's first chunk), so the LLM holds back its next
        tokens until the first sentence is synthesized (pipeline/cores.py)."""
        stats = stats if stats is not None else SynthesisStats()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[NDArray[np.int16] | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        resampler = ChunkResampler(self.sample_rate, rate)
        start = time.perf_counter()

        def produce() -> None:
            try:
                with contextlib.ExitStack() as urgency:
                    if urgent:
                        urgency.enter_context(CORES.urgent())
                    for chunk in self.synthesize(text):
                        urgency.close()  # the first audio is out: what follows plays after it, not urgent
                        if stop.is_set():
                            return
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        job = loop.run_in_executor(self._voice.executor, produce)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                last = item is None
                native = np.zeros(0, np.int16) if item is None else item
                out = resampler.process(native, last=last)
                if len(out):
                    now = time.perf_counter() - start
                    if stats.first_chunk_s is None:
                        stats.first_chunk_s = now
                    stats.chunks += 1
                    stats.audio_s += len(out) / rate
                    stats.elapsed_s = now
                    yield out
                if last:
                    break
        finally:
            stop.set()
            await asyncio.shield(job)  # the sentence in progress finishes on the worker; never left dangling
