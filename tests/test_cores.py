"""pipeline/cores.py: urgent speech work goes before the LLM's next token, and the LLM never starves.

The rule itself with threads, then its wiring into the real models: Whisper transcribing and Piper
synthesizing a reply's first sentence hold it; the local LLM waits on it between tokens.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.cores import CORES, Cores
from pipeline.speech.stt import WhisperSTT
from pipeline.speech.tts import PiperTTS
from pipeline.speech.turn import TurnDetector
from tests.peers.speech import speech_pcm


def test_without_urgent_work_the_llm_never_waits() -> None:
    cores = Cores(max_wait_s=1.0)
    assert cores.yield_to_urgent() == 0.0
    with cores.urgent():
        pass
    assert cores.yield_to_urgent() == 0.0 and cores.urgent_jobs == 0


def test_the_llm_waits_until_the_urgent_work_ends() -> None:
    cores = Cores(max_wait_s=5.0)
    started, finished = threading.Event(), threading.Event()
    ended_at: list[float] = []

    def urgent_job() -> None:
        with cores.urgent():
            started.set()
            time.sleep(0.15)
            ended_at.append(time.perf_counter())
        finished.set()

    job = threading.Thread(target=urgent_job)
    job.start()
    started.wait(1)
    waited = cores.yield_to_urgent()
    resumed = time.perf_counter()
    job.join()
    assert 0.1 < waited < 1.0
    assert resumed >= ended_at[0]  # not before the urgent work ended
    assert cores.yielded_s == pytest.approx(waited)


def test_nested_and_overlapping_urgent_work_holds_until_the_last_ends() -> None:
    cores = Cores(max_wait_s=5.0)
    release_first, release_second = threading.Event(), threading.Event()
    both = threading.Barrier(3)

    def job(release: threading.Event) -> None:
        with cores.urgent():
            both.wait(1)
            release.wait(2)

    threads = [threading.Thread(target=job, args=(e,)) for e in (release_first, release_second)]
    for thread in threads:
        thread.start()
    both.wait(1)
    assert cores.urgent_jobs == 2
    release_first.set()
    threading.Timer(0.15, release_second.set).start()
    start = time.perf_counter()
    cores.yield_to_urgent()
    assert time.perf_counter() - start >= 0.1  # still held by the second job after the first ended
    for thread in threads:
        thread.join()
    assert cores.urgent_jobs == 0


def test_the_wait_is_bounded_so_the_llm_cannot_starve() -> None:
    cores = Cores(max_wait_s=0.05)
    with cores.urgent():
        start = time.perf_counter()
        cores.yield_to_urgent()
        assert 0.04 < time.perf_counter() - start < 0.5


def test_an_exception_in_urgent_work_releases_it() -> None:
    cores = Cores()
    with pytest.raises(RuntimeError), cores.urgent():
        raise RuntimeError("synthesis failed")
    assert cores.urgent_jobs == 0 and cores.yield_to_urgent() == 0.0


def test_work_that_asks_to_come_after_a_prompt_batch_waits_for_it_and_the_batch_for_urgent_work() -> None:
    """Smart Turn (`urgent(after_batch=True)`) runs after the LLM's prompt batch running now, not beside it; a
    batch that finds urgent work running (Smart Turn or any other) starts after it. Never both at once."""
    cores = Cores(max_wait_s=5.0)
    running: list[str] = []
    overlaps: list[list[str]] = []
    in_batch = threading.Event()

    def run(name: str, hold: float) -> None:
        running.append(name)
        if len(running) > 1:
            overlaps.append(list(running))
        time.sleep(hold)
        running.remove(name)

    def batch() -> None:
        with cores.batch():
            in_batch.set()
            run("batch", 0.15)

    def smart_turn() -> None:
        with cores.urgent(after_batch=True):
            run("smart turn", 0.15)

    first = threading.Thread(target=batch)
    first.start()
    in_batch.wait(1)
    start = time.perf_counter()
    smart_turn()  # the batch is running: it goes after it
    assert time.perf_counter() - start >= 0.1
    first.join()
    with cores.urgent(after_batch=True):  # and a batch that starts while it runs waits for it
        second = threading.Thread(target=batch)
        second.start()
        time.sleep(0.1)
        assert second.is_alive() and "batch" not in running
        run("smart turn", 0.05)
    second.join()
    assert overlaps == [] and cores.urgent_jobs == 0
    with cores.batch():  # plain urgent work (Whisper, Piper) never waits for a batch
        start = time.perf_counter()
        with cores.urgent():
            pass
        assert time.perf_counter() - start < 0.05


def _watch_urgency(stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(CORES.urgent_jobs)
        time.sleep(0.002)


def test_whisper_transcribing_is_urgent() -> None:
    stt = WhisperSTT("tiny.en", Path(".flowyte"), eager=True)
    stop, seen = threading.Event(), list[int]()
    watcher = threading.Thread(target=_watch_urgency, args=(stop, seen))
    watcher.start()
    try:
        stt.transcribe(speech_pcm("What time do you open on Saturday?", 16000))
    finally:
        stop.set()
        watcher.join()
    assert max(seen) >= 1 and CORES.urgent_jobs == 0


def test_smart_turn_is_urgent_work_that_comes_after_a_prompt_batch() -> None:
    detector = TurnDetector()
    pcm = speech_pcm("What time do you open on Saturday?", 16000)
    detector.predict(pcm)  # loaded
    stop, seen = threading.Event(), list[int]()
    watcher = threading.Thread(target=_watch_urgency, args=(stop, seen))
    watcher.start()
    try:
        with CORES.batch():  # a prompt batch is running: the model waits for it
            waiting = threading.Thread(target=detector.predict, args=(pcm,))
            waiting.start()
            time.sleep(0.2)
            assert waiting.is_alive() and CORES.urgent_jobs == 0
        waiting.join(5)
    finally:
        stop.set()
        watcher.join()
    assert max(seen) >= 1 and CORES.urgent_jobs == 0


async def test_piper_holds_urgency_for_a_first_chunk_until_its_first_audio_only() -> None:
    tts = PiperTTS()
    text = "We open at nine on Saturday. Tables for six can be booked online or by phone, up to a week ahead."
    stop, seen = threading.Event(), list[int]()
    watcher = threading.Thread(target=_watch_urgency, args=(stop, seen))
    watcher.start()
    urgent_after_first: list[int] = []
    try:
        chunks = 0
        async for _ in tts.stream(text, rate=8000, urgent=True):
            chunks += 1
            if chunks == 1:
                urgent_after_first.append(CORES.urgent_jobs)
        assert chunks >= 2
    finally:
        stop.set()
        watcher.join()
    assert max(seen) >= 1  # while the first sentence was synthesized
    assert urgent_after_first == [0]  # released with the first audio: the second sentence is not urgent
    assert CORES.urgent_jobs == 0
