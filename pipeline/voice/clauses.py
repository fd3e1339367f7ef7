"""What the TTS speaks first: a reply's first clause, then whole sentences.

pipecat's sentence aggregation hands Piper a reply one sentence at a time, so the caller hears nothing
until the model has written the whole first sentence and Piper has synthesized all of it. Replies on the
phone often open with a short clause ("Yes, we deliver to the airport."): speaking "Yes," while the rest is
written saves the rest of the sentence's tokens and synthesis from the time to first audio, and a pause
after an opening clause sounds natural. Later clauses stay inside their sentences (each chunk boundary
costs Piper's phrase-final intonation and a possible gap), so only the first chunk of a reply is cut
short.

A clause ends at `,` `;` or `:` right after a letter ("Yes,": at once, not when the model's next token brings
the space), or followed by a space (so "1,000" and "10:30" are never split). A long
opening with no such mark ("We open on Saturday at 10:00 AM.") is cut before a joining word (`BREAK_WORDS`:
"at", "when", "and" ...) once `MIN_OPENING_WORDS` (3) words precede it: otherwise the caller waits for every
token of the first sentence (seen: "We open on Saturday at 10:00 AM." reached the caller ~0.9 s after its
first token, a reply that opens with "Yes," ~0.13 s). The cut falls where a speaker may pause anyway; Piper
gives the first part a phrase-final fall, the price of the earlier audio. "to", "that", "which" and "who"
bind to the words before them ("You do not have to be ...", "the pizza that ..."): before those the opening
needs `MIN_BOUND_OPENING_WORDS` (6), as before a pause would sound wrong sooner. Likewise an opening is cut before
a long number (`LONG_NUMBER_DIGITS` digits and more: a phone or order number) once `MIN_NUMBER_OPENING_WORDS`
words precede it: "Your phone number is 555-201-7788." is read digit by digit, and the model writes it a
token per digit, so the caller would wait for every digit twice (seen: first audio ~1.2 s after the first
token). A reply ends at the TTS's
`flush()` (the LLM response ended) or an interruption; the next one starts fresh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

CLAUSE_ENDINGS = frozenset(",;:")
SENTENCE_ENDINGS = frozenset(".!?")
MIN_OPENING_WORDS = 3  # words before a joining word before an opening is cut there
MIN_BOUND_OPENING_WORDS = 6  # the same before a word bound to what precedes it
BOUND_WORDS = frozenset({"to", "that", "which", "who"})
LONG_NUMBER_DIGITS = 5  # not a time (10:30), a year (1982) or a price ($18.99): those are short to say
MIN_NUMBER_OPENING_WORDS = 2
NUMBER_MARKS = frozenset("+()-./#$")  # what a written number may hold besides digits ("+1 (415) 555-0100")
BREAK_WORDS = frozenset(
    {"and", "or", "but", "so", "to", "for", "with", "from", "at", "on", "in", "by", "when", "where", "while",
     "because", "if", "until", "after", "before", "since", "which", "that", "who"}
)  # fmt: skip


def long_opening_cut(text: str) -> tuple[str, str] | None:
    """(`head`, `word`) when `text` has just completed a joining `word` after `MIN_OPENING_WORDS` words of an
    opening with no sentence mark yet (`MIN_BOUND_OPENING_WORDS` before a bound word); None otherwise."""
    words = text.split()
    if not words or text[-1:].isspace():
        return None
    word = words[-1]
    if word.lower() not in BREAK_WORDS:
        return None
    if len(words) - 1 < (MIN_BOUND_OPENING_WORDS if word.lower() in BOUND_WORDS else MIN_OPENING_WORDS):
        return None
    head = text[: len(text) - len(word)].rstrip()
    if any(c in SENTENCE_ENDINGS for c in head) or not any(c.isalnum() for c in head):
        return None  # a sentence mark pending ("Dr.", "$9.99"): the sentence rules decide
    return head, word


def long_number_cut(text: str) -> tuple[str, str] | None:
    """(`head`, `number`) when `text` ends inside a long number (still being written; "+1 (415) 555" is one)
    that follows at least `MIN_NUMBER_OPENING_WORDS` words of an opening with no sentence mark; None otherwise."""
    if text[-1:].isspace():
        return None
    words = text.split()
    start = len(words)
    while start > 0 and all(c.isdigit() or c in NUMBER_MARKS for c in words[start - 1]):
        start -= 1
    number = " ".join(words[start:])
    if start < MIN_NUMBER_OPENING_WORDS or sum(c.isdigit() for c in number) < LONG_NUMBER_DIGITS:
        return None
    head = " ".join(words[:start])
    if any(c in SENTENCE_ENDINGS for c in head) or not any(c.isalnum() for c in head):
        return None
    return head, number


class FirstClauseAggregator(SimpleTextAggregator):
    """Sentence aggregation, except that a reply's first chunk ends at its first clause."""

    def __init__(self, *, aggregation_type: TextType = TextType.SENTENCE, language: str | None = None) -> None:
        super().__init__(aggregation_type=aggregation_type, language=language)  # type: ignore[no-untyped-call]
        self._spoke = False  # whether this reply has had its first chunk

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self._aggregation_type == TextType.TOKEN:
            async for aggregation in super().aggregate(text):
                yield aggregation
            return
        for char in text:
            cut = None
            if not self._spoke:
                cut = long_opening_cut(self._text) if char.isspace() else long_number_cut(self._text)
            if cut is not None:
                head, word = cut
                await self.reset()  # type: ignore[no-untyped-call]
                self._spoke = True
                yield Aggregation(text=head, type=TextType.SENTENCE)
                async for aggregation in super().aggregate(word + char):  # the word or number opens the rest
                    yield aggregation
                continue
            if not self._spoke and char in CLAUSE_ENDINGS and self._text[-1:].isalpha():
                # After a word ("Yes,") the mark ends the clause at once: waiting for the space that shows it
                # is no number's ("1,000", "10:30") would wait for the model's next token (~40 ms here).
                clause = (self._text + char).strip()
                await self.reset()  # type: ignore[no-untyped-call]
                self._spoke = True
                yield Aggregation(text=clause, type=TextType.SENTENCE)
                continue
            if not self._spoke and char.isspace() and self._text[-1:] in CLAUSE_ENDINGS:
                clause = self._text.strip()
                if any(c.isalnum() for c in clause):
                    await self.reset()  # type: ignore[no-untyped-call]
                    self._spoke = True
                    yield Aggregation(text=clause, type=TextType.SENTENCE)
                    continue
            async for aggregation in super().aggregate(char):
                self._spoke = True
                yield aggregation

    async def flush(self) -> Aggregation | None:
        self._spoke = False
        return await super().flush()

    async def handle_interruption(self) -> None:
        self._spoke = False
        await super().handle_interruption()  # type: ignore[no-untyped-call]
