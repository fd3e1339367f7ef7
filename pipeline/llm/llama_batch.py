"""Two sequences in one llama.cpp KV cache, evaluated in one batch (llama-cpp-python's `Llama` evaluates one).

The engine evaluates the routing table's query (sequence 1) beside the chat prompt (sequence 0) in one batch
(`local_llama._Turn.route_beside`): short prompts cost llama.cpp here little more together than one alone.
These helpers reach into llama-cpp-python's context and batch, which it has no public API for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llama_cpp import Llama, llama_cpp
from llama_cpp._internals import LlamaContext
from numpy.typing import NDArray

from pipeline.llm.prefix_cache import Tokens


def with_two_sequences(llm: Llama) -> Llama:
    """`llm` with a context that holds two sequences in one KV cache (the chat, and the routing table's query
    beside it: `_Turn.route_beside`). llama-cpp-python creates its context for one sequence and has no
    parameter for more, so the context is made again from the same parameters."""
    params = llm.context_params
    params.n_seq_max, params.kv_unified = 2, True  # unified: both sequences share the n_ctx cells
    single = llm._ctx
    llm._ctx = LlamaContext(model=llm._model, params=params, verbose=False)
    single.close()  # type: ignore[no-untyped-call]
    return llm


def decode_batch(llm: Llama, parts: Sequence[tuple[int, int, Tokens]]) -> list[int]:
    """Evaluate several sequences' tokens in one batch: (sequence, position of the first token, tokens) each.
    Returns the batch index of each part's last token, whose logits are kept."""
    batch = llm._batch.batch
    index, last = 0, []
    for seq, start, tokens in parts:
        for offset, token in enumerate(tokens.tolist()):
            batch.token[index] = token
            batch.pos[index] = start + offset
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = seq
            batch.logits[index] = offset == len(tokens) - 1
            index += 1
        last.append(index - 1)
    batch.n_tokens = index
    llm._ctx.decode(llm._batch)
    return last


def logits_at(llm: Llama, index: int) -> NDArray[np.single]:
    """The logits the last batch kept for its token `index` (-1: the last one kept): a view, valid until the
    next decode (each is read before the next token is evaluated)."""
    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, index)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),))
