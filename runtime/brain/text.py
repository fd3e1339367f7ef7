"""Small pure text rules the brain shares: words and keywords, tool names, questions, a "yes".

All of them are deliberately simple and deterministic (no model involved), so a receipt can explain
every decision they feed:

    keywords(text)        lowercase words minus stopwords, crudely singularized ("refunds" -> "refund")
    keyword_overlap(a, b) how many keywords two texts share (transfer rules, step-up actions, topics)
    snake_case(name)      "Look up order #2" -> "look_up_order_2", a valid tool identifier
    looks_like_question   a "?" or a leading question word, and at least three words
    is_affirmative        starts with a yes-word and holds no negation or change of mind
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _wordset(
    """a an the and or but if of to in on at by for from with about into over as is are was were be been being
    it its this that these those there here i me my we our you your he she they them their his her
    caller callers customer customers user users person someone somebody asks ask asking asked wants want
    wanting needs need needing says say said prefers prefer has have having had do does did can could
    would should will may might must please when whenever who what which how why where some any
    all just also very really like"""
)

QUESTION_WORDS = _wordset(
    """what whats what's when where who whom whose why how which do does did can could is are was were will
    would should may might have has am shall tell"""
)

YES_WORDS = _wordset(
    """yes yeah yep yup yea sure correct confirm confirmed ok okay right absolutely definitely affirmative
    certainly go proceed please si sí oui ja"""
)
NEGATIONS = _wordset(
    """no not nope nah don't dont doesn't isn't wait cancel stop change but instead actually hold wrong
    never"""
)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def singular(word: str) -> str:
    """A crude stem: enough for "refunds"/"refund" and "invoices"/"invoice" to meet."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def keywords(text: str) -> frozenset[str]:
    return frozenset(singular(w) for w in words(text) if w not in STOPWORDS)


def keyword_overlap(a: str, b: str) -> int:
    return len(keywords(a) & keywords(b))


def contains_all_keywords(text: str, phrase: str) -> bool:
    """Every keyword of `phrase` occurs in `text` (a phrase of stopwords only never matches)."""
    wanted = keywords(phrase)
    return bool(wanted) and wanted <= keywords(text)


def snake_case(name: str, *, fallback: str = "skill", limit: int = 64) -> str:
    """An identifier the model can call: lowercase ASCII letters, digits and underscores."""
    text = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or fallback
    if text[0].isdigit():
        text = f"{fallback}_{text}"
    return text[:limit].rstrip("_")


def looks_like_question(text: str) -> bool:
    tokens = words(text)
    if len(tokens) < 3:
        return False
    return "?" in text or tokens[0] in QUESTION_WORDS


def is_affirmative(text: str) -> bool:
    tokens = words(text)
    if not tokens or tokens[0] not in YES_WORDS:
        return False
    return not any(t in NEGATIONS for t in tokens)
