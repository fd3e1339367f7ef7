"""The offline speech models, run for real on real audio: Whisper (tiny.en and the joined base), Piper,
Silero VAD and Smart Turn. Caller speech is espeak-ng (tests/peers/speech.py); nothing is downloaded.

Every model is loaded once per module, under a socket guard that refuses any non-loopback connection and
with HF_HUB_OFFLINE=1; one test repeats the loads in a fresh process under the same guard. A missing model
fails, it is never skipped.

Smart Turn is asserted only on a complete question: on espeak-ng and Piper audio (flat synthetic prosody) it
also calls many *incomplete* sentences complete ("What time do you open on" scores ~0.87), and even rated the
complete "Can I speak to the manager please?" at ~0.24, so incomplete-sentence behaviour is not asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from numpy.typing import NDArray

from pipeline.speech.model_assets import (
    WHISPER_BASE,
    SpeechModelError,
    SplitModel,
    ensure_split_model,
    is_assembled,
    marker_path,
    prepare,
    whisper_model_dir,
)
from pipeline.speech.stt import WhisperSTT, model_for_language
from pipeline.speech.tts import ChunkResampler, PiperTTS, SynthesisStats
from pipeline.speech.turn import TurnDetector
from pipeline.speech.vad import SpeechDetector, SpeechEvent
from tests.peers.speech import pad, speech_pcm

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What time do you open on Saturday?"
HOURS = "Our opening hours are nine to five."
FRAME = 320  # 20 ms at 16 kHz


def words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    try:
        return bool(ipaddress.ip_address(address[0]).is_loopback)
    except ValueError:
        return bool(address[0] == "localhost")


class NetworkRefused(AssertionError):
    pass


GUARD_SOURCE = """
import ipaddress, socket
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def _allowed(address):
    if not isinstance(address, tuple):
        return True
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return address[0] == "localhost"
def _guard(real):
    def connect(self, address):
        if not _allowed(address):
            raise AssertionError(f"network access attempted: {address!r}")
        return real(self, address)
    return connect
socket.socket.connect, socket.socket.connect_ex = _guard(_connect), _guard(_connect_ex)
"""


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 and no connection to anything but loopback, for every load in this module."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            raise NetworkRefused(f"network access attempted: {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            raise NetworkRefused(f"network access attempted: {address!r}")
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech-data")


@pytest.fixture(scope="module")
def tiny(offline: None, data_dir: Path) -> WhisperSTT:
    return WhisperSTT("tiny.en", data_dir, eager=True)


@pytest.fixture(scope="module")
def tts(offline: None) -> PiperTTS:
    return PiperTTS()


@pytest.fixture(scope="module")
def turn(offline: None) -> TurnDetector:
    return TurnDetector(max_silence_s=2.0)


@pytest.fixture(scope="module")
def question16k() -> NDArray[np.int16]:
    return speech_pcm(QUESTION, 16000)


# ----------------------------------------------------------------------------------------------- assets


def test_the_guard_refuses_the_network(offline: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(NetworkRefused):
        s.connect(("192.0.2.1", 443))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_whisper_base_join_is_verified_and_idempotent(offline: None, data_dir: Path) -> None:
    directory = whisper_model_dir("base", data_dir)
    assert directory == data_dir / "models" / "whisper-base"
    model = directory / "model.bin"
    digest = hashlib.sha256()
    with model.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == WHISPER_BASE.sha256
    assert model.stat().st_size == WHISPER_BASE.size
    assert marker_path(directory).read_text().split()[0] == WHISPER_BASE.sha256
    assert {p.name for p in directory.iterdir()} == {
        "model.bin",
        "model.bin.sha256",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    before = model.stat()
    assert whisper_model_dir("base", data_dir) == directory  # second call: nothing rewritten
    after = model.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_bad_part_never_leaves_a_model(tmp_path: Path) -> None:
    parts = {"p1": tmp_path / "a.bin", "p2": tmp_path / "b.bin", "cfg": tmp_path / "config.json"}
    parts["p1"].write_bytes(b"first" * 100)
    parts["p2"].write_bytes(b"second" * 100)
    parts["cfg"].write_text("{}")
    good = hashlib.sha256(parts["p1"].read_bytes() + parts["p2"].read_bytes()).hexdigest()
    fake = SplitModel("fake", 1100, "0" * 64, (("p1", ""), ("p2", "")), (("cfg", "data/config.json"),))

    def locate(package: str, relative: str) -> Path:
        return parts[package]

    with pytest.raises(SpeechModelError, match="SHA-256"):
        ensure_split_model(tmp_path / "data", fake, locate=locate)
    directory = tmp_path / "data" / "models" / "fake"
    assert not (directory / "model.bin").exists() and not marker_path(directory).exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temp files left behind
    fixed = SplitModel("fake", 1100, good, fake.parts, fake.files)
    assert ensure_split_model(tmp_path / "data", fixed, locate=locate) == directory
    assert is_assembled(directory, fixed)
    assert (directory / "config.json").read_text() == "{}"


def test_prepare_finds_everything(offline: None, data_dir: Path) -> None:
    paths = prepare(data_dir)
    assert set(paths) == {"whisper-tiny.en", "whisper-base", "piper-voice", "silero-vad", "smart-turn"}
    assert all(p.exists() for p in paths.values())


def test_loaders_in_a_fresh_process_touch_no_network(data_dir: Path) -> None:
    script = GUARD_SOURCE + (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from pipeline.speech.model_assets import prepare\n"
        "from pipeline.speech.stt import WhisperSTT\n"
        "from pipeline.speech.tts import PiperTTS\n"
        "from pipeline.speech.turn import TurnDetector\n"
        "from pipeline.speech.vad import SpeechDetector\n"
        "data = Path(sys.argv[1])\n"
        "prepare(data)\n"
        "silence = np.zeros(16000, np.int16)\n"
        "for name in ('tiny.en', 'base'):\n"
        "    WhisperSTT(name, data).transcribe(silence)\n"
        "assert sum(len(c) for c in PiperTTS().synthesize('Hi.')) > 0\n"
        "TurnDetector().predict(silence)\n"
        "SpeechDetector().process(silence)\n"
        "print('offline ok')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "offline ok" in done.stdout


# -------------------------------------------------------------------------------------------------- STT


def test_model_choice_by_language() -> None:
    assert model_for_language("en") == "tiny.en"
    assert model_for_language("en-GB") == "tiny.en"
    assert model_for_language("EN_us") == "tiny.en"
    assert model_for_language("es") == "base"
    assert model_for_language("de-DE") == "base"
    assert model_for_language(None) == "base"


def test_tiny_en_transcribes_a_question(tiny: WhisperSTT, question16k: NDArray[np.int16]) -> None:
    result = tiny.transcribe(question16k, "en")
    assert "saturday" in words(result.text), result
    assert result.language == "en"
    assert result.audio_s == pytest.approx(len(question16k) / 16000)
    assert 0 < result.elapsed_s < 10


async def test_tiny_en_transcribes_telephone_audio_off_the_loop(tiny: WhisperSTT) -> None:
    """8 kHz from a call leg, brought to 16 kHz with soxr; two turns queue on the model's one thread."""
    pcm16k = soxr.resample(speech_pcm(QUESTION, 8000), 8000, 16000)
    assert pcm16k.dtype == np.int16
    first, second = await asyncio.gather(tiny.transcribe_async(pcm16k), tiny.transcribe_async(pcm16k))
    for result in (first, second):
        assert "saturday" in words(result.text), result
        assert result.elapsed_s > 0


def test_whisper_base_transcribes_english(offline: None, data_dir: Path) -> None:
    base = WhisperSTT.for_language("en-US", data_dir)
    assert base.name == "tiny.en"
    base = WhisperSTT("base", data_dir)
    result = base.transcribe(speech_pcm("Please call me back tomorrow morning.", 16000), "en")
    assert {"call", "tomorrow", "morning"} <= words(result.text), result
    assert result.language == "en" and result.elapsed_s > 0


# -------------------------------------------------------------------------------------------------- TTS


def test_piper_synthesizes_at_the_native_rate(tts: PiperTTS) -> None:
    assert tts.sample_rate == 22050
    chunks = list(tts.synthesize(HOURS))
    assert chunks and all(c.dtype == np.int16 for c in chunks)
    audio = np.concatenate(chunks)
    duration = len(audio) / tts.sample_rate
    assert 1.2 < duration < 4.5, duration
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 1000, rms


def test_streaming_resampler_is_continuous(tts: PiperTTS) -> None:
    native = list(tts.synthesize(HOURS + " We are closed on Sunday."))
    assert len(native) == 2  # Piper yields one chunk per sentence
    pieces = [*native[:1], *np.array_split(native[1], 37)]  # and odd-sized pieces, to stress the boundaries
    whole = np.concatenate(native)
    for rate in (8000, 16000):
        resampler = ChunkResampler(22050, rate)
        streamed = np.concatenate([*(resampler.process(p) for p in pieces), resampler.process(whole[:0], last=True)])
        oneshot = soxr.resample(whole, 22050, rate)
        assert len(streamed) == len(oneshot)
        assert int(np.max(np.abs(streamed.astype(np.int32) - oneshot.astype(np.int32)))) <= 4


async def test_piper_round_trip_through_8k_and_whisper(tts: PiperTTS, tiny: WhisperSTT) -> None:
    stats = SynthesisStats()
    chunks = [chunk async for chunk in tts.stream(HOURS, 8000, stats)]
    audio8k = np.concatenate(chunks)
    assert stats.first_chunk_s is not None and 0 < stats.first_chunk_s <= stats.elapsed_s
    assert stats.audio_s == pytest.approx(len(audio8k) / 8000)
    assert 1.2 < stats.audio_s < 4.5
    heard = words((await tiny.transcribe_async(soxr.resample(audio8k, 8000, 16000))).text)
    assert heard & {"opening", "hours"}, heard
    assert heard & {"five", "5"}, heard


# -------------------------------------------------------------------------------------------------- VAD


def run_detector(detector: SpeechDetector, audio: NDArray[np.int16]) -> list[tuple[SpeechEvent, float]]:
    events = []
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        event = detector.feed(audio[i : i + FRAME])
        if event is not None:
            events.append((event, (i + FRAME) / 16000))
    return events


@pytest.mark.parametrize("stop_s", [0.3, 0.8])
def test_speech_start_and_end(offline: None, question16k: NDArray[np.int16], stop_s: float) -> None:
    loud = np.nonzero(np.abs(question16k) > 300)[0]
    onset, offset = 1.0 + loud[0] / 16000, 1.0 + loud[-1] / 16000
    events = run_detector(SpeechDetector(stop_s=stop_s), pad(question16k, 1.0, 1.5, 16000))
    assert [e for e, _ in events] == [SpeechEvent.SPEECH_START, SpeechEvent.SPEECH_END], events
    (_, started), (_, ended) = events
    assert 0.2 <= started - onset <= 0.3, started - onset
    assert stop_s <= ended - offset <= stop_s + 0.2, ended - offset


def test_vad_stays_quiet_on_silence_and_line_noise(offline: None) -> None:
    rng = np.random.default_rng(7)
    for audio in (
        np.zeros(16000 * 3, np.int16),
        np.rint(rng.normal(0, 100, 16000 * 3)).astype(np.int16),  # about -50 dBFS
        np.rint(rng.normal(0, 1000, 16000 * 3)).astype(np.int16),  # about -30 dBFS
    ):
        detector = SpeechDetector()
        assert run_detector(detector, audio) == []
        assert detector.probability < 0.2


# ------------------------------------------------------------------------------------------- Smart Turn


async def test_smart_turn_calls_a_complete_question_complete(
    turn: TurnDetector, question16k: NDArray[np.int16]
) -> None:
    audio = pad(question16k, 0.3, 0.2, 16000)
    complete, probability = turn.predict(audio)
    assert 0.0 <= probability <= 1.0
    assert complete and probability > 0.8, probability
    assert await turn.predict_async(audio) == pytest.approx((complete, probability))
    long_turn = np.concatenate([np.zeros(16000 * 10, np.int16), audio])  # only the last 8 s are used
    assert turn.predict(long_turn)[1] == pytest.approx(probability, abs=1e-4)


async def test_max_silence_ends_the_turn_regardless(turn: TurnDetector) -> None:
    trailing_off = speech_pcm("My name is John and I", 16000)
    by_model = turn.decide(trailing_off, silence_s=0.4)
    assert by_model.reason == "model" and 0.0 <= by_model.probability <= 1.0
    by_silence = await turn.decide_async(trailing_off, silence_s=2.0)
    assert by_silence.complete and by_silence.reason == "max_silence"
