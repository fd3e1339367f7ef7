"""Greedy decoding under a GBNF grammar, checking the grammar lazily (as llama.cpp's own common sampler does).

Applying a grammar to every one of Qwen's 151,936 candidate tokens at every step costs far more than the
model's forward pass on a small CPU. But under greedy decoding only one token matters: take the argmax of
the raw logits, ask the grammar about that single token, and only when it is rejected apply the grammar
to the whole vocabulary and take the best allowed token. When the model already follows the format (most
steps inside a JSON string or after a routing-table key) each step checks one token.

`bounded_schema` caps the strings and arrays a JSON Schema leaves unbounded, for the grammar compiled from it.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt
from llama_cpp import llama_cpp

from pipeline.llm.errors import LLMBadResponse

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class _Candidates:
    """A `llama_token_data_array` over a numpy record buffer of `size` entries."""

    def __init__(self, size: int) -> None:
        self.data = np.zeros((size,), dtype=_TOKEN_DATA)
        self.array = llama_cpp.llama_token_data_array(
            data=self.data.ctypes.data_as(llama_cpp.llama_token_data_p), size=size, selected=-1, sorted=False
        )

    def load(self, ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> None:
        self.data["id"] = ids
        self.data["logit"] = logits
        self.data["p"] = 0.0
        self.array.size = len(ids)
        self.array.selected = -1
        self.array.sorted = False


class GrammarSampler:
    """One use of one grammar: `pick(logits)` per step, then `close()`."""

    def __init__(self, vocab: Any, gbnf: str, n_vocab: int) -> None:
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._sampler:
            raise LLMBadResponse(f"llama.cpp rejected the grammar:\n{gbnf[:500]}")
        self._ids = np.arange(n_vocab, dtype=np.intc)
        self._one = _Candidates(1)
        self._all = _Candidates(n_vocab)
        self.full_checks = 0  # steps where the argmax was rejected and the whole vocabulary was masked

    def _allowed(self, token: int, logit: float) -> bool:
        self._one.load(np.array([token], dtype=np.intc), np.array([logit], dtype=np.single))
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._one.array))
        return bool(np.isfinite(self._one.data["logit"][0]))

    def pick(self, logits: npt.NDArray[np.single]) -> int:
        token = int(np.argmax(logits))
        if not self._allowed(token, float(logits[token])):
            self.full_checks += 1
            self._all.load(self._ids, logits)
            llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._all.array))
            masked = self._all.data["logit"][: self._all.array.size]
            token = int(self._all.data["id"][int(np.argmax(masked))])
            if not np.isfinite(masked.max()):
                raise LLMBadResponse("the grammar allows no token here")
        llama_cpp.llama_sampler_accept(self._sampler, token)
        return token

    def close(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None

    def __enter__(self) -> GrammarSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_STRING_BOUNDS = ("maxLength", "enum", "const", "pattern", "format")


def bounded_schema(schema: Any, max_chars: int, max_items: int) -> Any:
    """`schema` with `maxLength`/`maxItems` added wherever a string or array has no bound of its own."""
    if isinstance(schema, list):
        return [bounded_schema(item, max_chars, max_items) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bounded_schema(value, max_chars, max_items) for key, value in schema.items()}
    types = out.get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types and not any(key in out for key in _STRING_BOUNDS):
        out["maxLength"] = max_chars
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = max(max_items, int(out.get("minItems", 0)))
    return out
