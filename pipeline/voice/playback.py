"""What the caller actually heard of the agent's last utterance (STYLE rule 7).

The output transport writes each TTS chunk's audio into the leg's FIFO buffer and tells the tracker two
things, in playback order: `add_text(text)` when a chunk of text starts being spoken, then
`add_audio(position_ms, duration_ms)` for every piece of that chunk's audio, where `position_ms` is the
leg's playback position at which that piece will start playing (`played_ms` + `buffered_ms` when written:
the buffer is FIFO, so that is where the new audio lands). On barge-in the transport reads the leg's
`played_ms` and asks `heard(played_ms)`: every chunk whose audio has fully played was heard; in the chunk
that was playing, the heard fraction of its audio maps to the same fraction of its characters, cut back
to the last whole word. Pure logic: no clock, no asyncio, no pipecat.

Which chunk a written piece of audio belongs to is known by counting, not by when the text marks arrive.
The marks come in order, but not in step with the audio: pipecat's media sender resamples the synthesizer's
audio (Piper: 22,050 Hz) to the leg's rate, and its resampler keeps the last few ms of a chunk until more
audio pushes them out, after the next chunk's mark (or flushes them at the end of the reply). So each
chunk's length is the audio the transport was handed for it (`expect`), and the chunks lie end to end on
the utterance's written audio. Attributed by the marks instead, the first chunk of "I'm sorry, but I can't
assist with that." was 2.5 ms short of played out after the whole reply had played, and the caller's next
turn cut the history back to "I'm".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Heard:
    """The heard prefix of an utterance: `text` (whole words) out of `full_text`."""

    text: str
    full_text: str
    heard_ms: int
    total_ms: int

    @property
    def complete(self) -> bool:
        return self.text == self.full_text


@dataclass(slots=True)
class _Chunk:
    text: str
    key: int | None = None
    # (start, end) in leg playback milliseconds, in the order written
    audio: list[tuple[float, float]] = field(default_factory=list)

    @property
    def written_ms(self) -> float:
        return sum(end - start for start, end in self.audio)

    def played_ms(self, position_ms: float) -> float:
        return sum(max(0.0, min(end, position_ms) - start) for start, end in self.audio)


def heard_prefix(text: str, fraction: float) -> str:
    """The whole words of `text` within its first `fraction` of characters (a word counts once it ends)."""
    if fraction >= 1.0:
        return text.strip()
    if fraction <= 0.0:
        return ""
    cut = fraction * len(text)
    words = [m for m in _WORD.finditer(text) if m.end() <= cut]
    return text[: words[-1].end()].strip() if words else ""


class PlaybackTracker:
    """Maps one utterance's text to its audio on the leg's playback timeline."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []
        self._pending_audio: list[tuple[float, float]] = []  # audio before any text (a pre-roll, a tone)
        self._expected: dict[int, float] = {}  # chunk key -> audio received for it so far (ahead of playback)

    def reset(self) -> None:
        """Start a new utterance (a new assistant reply, or after an interruption)."""
        for chunk in self._chunks:
            if chunk.key is not None:
                self._expected.pop(chunk.key, None)
        self._chunks.clear()
        self._pending_audio.clear()

    def expect(self, key: int, duration_ms: float) -> None:
        """`duration_ms` more audio exists for the chunk `key` (seen as it arrives, before it is written).

        A chunk's audio is written to the leg only as fast as it plays, so at a barge-in the chunk that
        was playing is usually not all written yet; this is how long it really is.
        """
        self._expected[key] = self._expected.get(key, 0.0) + duration_ms
        while len(self._expected) > 256:  # keys never linked to text (dropped by an interruption)
            del self._expected[next(iter(self._expected))]

    @property
    def empty(self) -> bool:
        return not self._chunks

    def add_text(self, text: str, key: int | None = None) -> None:
        """A chunk of text starts being spoken; the audio added next belongs to it (`key`: see `expect`)."""
        if text.strip():
            self._chunks.append(_Chunk(text.strip(), key))

    def add_audio(self, position_ms: float, duration_ms: float) -> None:
        """`duration_ms` of the current chunk's audio will start playing at leg position `position_ms`."""
        if duration_ms <= 0:
            return
        span = (float(position_ms), float(position_ms) + float(duration_ms))
        if self._chunks:
            self._chunks[-1].audio.append(span)
        else:
            self._pending_audio.append(span)

    @property
    def full_text(self) -> str:
        return " ".join(chunk.text for chunk in self._chunks)

    def playing_until_ms(self) -> float:
        """Leg position at which everything written so far will have played."""
        ends = [end for chunk in self._chunks for _, end in chunk.audio] + [end for _, end in self._pending_audio]
        return max(ends, default=0.0)

    def _length_ms(self, chunk: _Chunk) -> float:
        """How long the chunk's audio is: as handed to the transport, else (no `expect`) as written."""
        expected = self._expected.get(chunk.key, 0.0) if chunk.key is not None else 0.0
        return expected if expected > 0 else chunk.written_ms

    def heard(self, played_ms: float) -> Heard:
        """What had been heard once the leg had played up to `played_ms`."""
        heard_ms = sum(chunk.played_ms(played_ms) for chunk in self._chunks)
        lengths = [self._length_ms(chunk) for chunk in self._chunks]
        parts: list[str] = []
        start = 0.0  # where the chunk's audio begins in the utterance's audio
        for chunk, length in zip(self._chunks, lengths, strict=True):
            if length > 0 and heard_ms >= start + length:
                parts.append(chunk.text)
                start += length
                continue
            # The chunk that was playing (or had no audio yet): the rest was not heard.
            prefix = heard_prefix(chunk.text, (heard_ms - start) / length) if length > 0 else ""
            if prefix:
                parts.append(prefix)
            break
        total_ms = max(sum(lengths), sum(chunk.written_ms for chunk in self._chunks))
        return Heard(" ".join(parts), self.full_text, round(heard_ms), round(total_ms))
