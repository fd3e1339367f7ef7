"""Whisper decoding of a short turn over a shorter encoder window than the 30 s it was trained on.

faster-whisper always pads the log-Mel features to 3000 frames (30 s), so the encoder costs the same for a
two-word answer as for 30 s of speech: ~0.45-0.55 s of tiny.en on this project's 2-core reference machine,
the biggest single part of a phone turn's voice-to-voice latency. CTranslate2's Whisper encoder accepts
fewer frames (it uses the first positional embeddings), as whisper.cpp's `audio_ctx` does. With 1500 frames
(15 s) a turn is transcribed in ~0.25 s instead (1000 frames, 10 s, is what tiny.en uses first now: stt.py).

The trade-off was measured (benchmarks/stt_window.py, 80 phone-band turns per voice, tiny.en): with a
natural voice (Piper) the word error rate was 6.3 % over 1500 frames and 7.2 % over 3000 (8.9 % in another
run: Piper's synthesis varies, so that difference is noise); with espeak-ng's robotic voice, which tiny.en
mostly mishears anyway, 52.5 % and 54.6 %. Latency p50 250 ms instead of 551. The audio is padded with real
silence to the window *before* the features are computed (as the original Whisper does): padding the
features instead (faster-whisper's way) made the short window end early on long turns more often.

It still can, rarely: on the espeak voice, two long turns lost their last words ("... Phone 555-9898.").
So a transcript that is implausibly short for the speech in the turn (`looks_cut_short`: under two words a
second of speech) is decoded again over the full window. That cost a second decode on 6 of the 160 turns
measured, and it is a heuristic chosen on those same turns: it catches both cut turns seen there, not every
possible one.

The decoding mirrors faster-whisper's `transcribe` for one segment with our options (greedy, temperature
0, no timestamps, its default suppressed tokens, the prompt and hotwords as `get_prompt` builds them) and
its no-speech rule (no-speech probability above 0.6 *and* average log probability below -1: nothing was
said). Turns longer than the window (minus a margin) keep faster-whisper's full path.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.speech.levels import window_rms

HOP_SAMPLES = 160  # one log-Mel frame at 16 kHz (10 ms)
FULL_FRAMES = 3000  # faster-whisper's (and Whisper's) 30 s window
NO_SPEECH_THRESHOLD = 0.6  # faster-whisper's defaults for its no-speech rule
LOG_PROB_THRESHOLD = -1.0
MIN_WORDS_PER_S = 2.0  # below this rate over a turn's speech, the decode is taken to have stopped early
LOOP_COMPRESSION_RATIO = 2.4
SPEECH_FLOOR_DBFS = -50.0  # 20 ms windows quieter than this are not speech (as WhisperSTTService's floor)
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class WindowResult:
    text: str
    language: str
    no_speech: bool  # the no-speech rule held: `text` is "" whatever the model wrote
    looped: bool = False  # the decode ran to its token bound or repeats itself (`looks_looped`)


def fits(samples: int, frames: int, margin_s: float = 0.5) -> bool:
    """Whether `samples` of 16 kHz audio fit a `frames` window with `margin_s` of silence after them.

    The margin keeps the speech's last syllable away from the window's edge, where the model has seen
    no training audio end.
    """
    return frames < FULL_FRAMES and samples + round(margin_s * 16000) <= frames * HOP_SAMPLES


def speech_seconds(audio: NDArray[np.float32]) -> float:
    """How much of `audio` (16 kHz float32) is speech: 20 ms windows above the floor and within 30 dB of the
    loud ones (so pre-roll, pauses and the trailing pad do not count)."""
    rms = window_rms(audio, 320)
    if len(rms) == 0:
        return 0.0
    level = 20.0 * np.log10(np.maximum(rms, 1e-6))
    floor = max(SPEECH_FLOOR_DBFS, float(np.percentile(level, 90)) - 30.0)
    return float(np.count_nonzero(level > floor)) * 0.02


def looks_cut_short(text: str, speech_s: float) -> bool:
    """Whether a transcript has too few words for `speech_s` seconds of speech (at least one second)."""
    return speech_s >= 1.0 and len(_WORD.findall(text)) < MIN_WORDS_PER_S * speech_s


def compression_ratio(text: str) -> float:
    """How much zlib shrinks `text`: Whisper's own measure of a decode that repeats itself."""
    raw = text.encode()
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def repeats_itself(text: str, times: int = 3) -> bool:
    """Whether `text` says a phrase of two to six words `times` times over, back to back ("when I open on
    Saturday, when I open on Saturday, when I open on Saturday")."""
    words = [word.lower() for word in _WORD.findall(text)]
    for n in range(2, 7):
        for start in range(len(words) - n * times + 1):
            phrase = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == phrase for k in range(1, times)):
                return True
    return False


def looks_looped(text: str, *, hit_bound: bool) -> bool:
    """Whether a decode is stuck in a loop: it ran to its token bound, it says one phrase three times over, or
    its text compresses better than `LOOP_COMPRESSION_RATIO` (Whisper's and faster-whisper's threshold for a
    repetitive decode over 30 s; a short sentence compresses to more than its own length). A real repetition
    ("thank you, thank you, thank you") only costs one more decode over the next window."""
    return hit_bound or repeats_itself(text) or compression_ratio(text) > LOOP_COMPRESSION_RATIO


def max_new_tokens(audio_s: float) -> int:
    """A bound on the tokens a turn of `audio_s` can need: twice a fast talker (4 tokens a second) and
    room for a short one. Without it a greedy decode that falls into a loop ("B-B-B-...") runs to
    Whisper's 448-token limit: ~2 s of tiny.en here, for a transcript that is garbage anyway. (`decode`
    passes it on in CTranslate2's `max_length`, which generates at most half of it: in effect a fast
    talker's rate and 8 tokens more; the full path passes it to faster-whisper the same way.)"""
    return 16 + round(8 * audio_s)


def decode(
    model: Any,
    audio: NDArray[np.float32],
    frames: int,
    *,
    language: str | None,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
) -> WindowResult:
    """Transcribe `audio` (16 kHz mono float32, `fits` the window) with a faster-whisper `WhisperModel`."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    padded = np.pad(audio, (0, max(0, frames * HOP_SAMPLES - len(audio))))
    features = model.feature_extractor(padded)[:, :frames]
    encoder_output = model.encode(features)
    if language is None:
        if model.model.is_multilingual:
            token, _probability = model.model.detect_language(encoder_output)[0][0]
            language = str(token)[2:-2]  # "<|de|>" -> "de"
        else:
            language = "en"
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    previous = tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
    prompt = model.get_prompt(tokenizer, previous, without_timestamps=True, hotwords=hotwords)
    limit = min(model.max_length, len(prompt) + max_new_tokens(len(audio) / 16000))
    result = model.model.generate(
        encoder_output,
        [prompt],
        beam_size=1,
        max_length=limit,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1]) or ()),
    )[0]
    tokens = result.sequences_ids[0]
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # as faster-whisper: length penalty 1
    no_speech = result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
    text = "" if no_speech else str(tokenizer.decode(tokens)).strip()
    # CTranslate2's Whisper generates at most half of `max_length` (seen: 10 -> 5 tokens, 39 -> 19, 46 -> 23)
    hit_bound = len(tokens) >= min(limit - len(prompt), limit // 2)
    looped = not no_speech and looks_looped(text, hit_bound=hit_bound)
    return WindowResult(text=text, language=language, no_speech=no_speech, looped=looped)
