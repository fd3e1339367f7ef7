"""The offline default: llama.cpp in-process (llama-cpp-python), Qwen2.5-Coder-0.5B-Instruct, the bundled
Q4_K_M requantized to Q8_0 (`model_assets.ensure_runtime_model`: its prompts evaluate faster).

Two layers, as everywhere in this project:

- `LlamaEngine` is synchronous and owns the model. One per model file per process (`LlamaEngine.shared`),
  loaded lazily on first use, run by a single worker thread: turns of different conversations queue on
  it and run one at a time (plus a lock, in case anything else calls in). Between tokens, and between
  prefill chunks, it checks the turn's cancel event.
- `local_provider.LocalLlamaProvider` is the async shell: it submits a turn to the engine and relays what
  the worker emits to the event loop.

Latency: prompts are formatted by `chat_template` so the frozen prefixes (system prompt + tools, and the
routing table) are byte-identical across turns; `PrefixStateCache` keeps the KV state of each prefix and
of each conversation after its last turn, so a new turn only evaluates its new messages, even when
several conversations take turns on the model. A conversation that outgrows the context drops its oldest
messages; its next turn loads its last state with those messages cut out of the KV cache and the rest
shifted down (`LlamaEngine.cut_out`, llama.cpp's context shift) instead of evaluating it all again. The
routing table's query and the chat prompt's new tokens are evaluated in one batch, as two sequences of one
KV cache (`_Turn.route_beside`, over `llama_batch`): short prompts cost llama.cpp here little more together
than one alone.

Tools (decide-then-fill, see `chat_template`): step 1 continues the few-shot routing table for the
caller's message under a GBNF over the declared names plus the no-tool choice, stopping as soon as the
text pins down one name. Step 2, for a tool, continues the chat prompt as a Qwen `<tool_call>` under a
GBNF compiled from the tool's JSON Schema, then validates the arguments with `jsonschema` before a
`ToolCall` is emitted. Otherwise the reply streams as ordinary text. Both constrained steps are greedy
(`constrained.GrammarSampler`, which checks the grammar lazily); `temperature` applies to text only.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import contextlib
import ctypes
import json
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
from llama_cpp import Llama, LogitsProcessorList, llama_cpp
from llama_cpp.llama_grammar import json_schema_to_gbnf
from numpy.typing import NDArray

from pipeline.cores import CORES, Cores
from pipeline.llm import chat_template as ct
from pipeline.llm.constrained import GrammarSampler, bounded_schema
from pipeline.llm.errors import LLMBadResponse, LLMError, LLMRequestError
from pipeline.llm.llama_batch import decode_batch, logits_at, with_two_sequences
from pipeline.llm.prefix_cache import Cut, PrefixStateCache, SavedState, Tokens, as_tokens, common_prefix
from pipeline.llm.types import (
    ChatMessage,
    FinishReason,
    GenerationSettings,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

ROUTER_SEQ = 1  # the KV cache's second sequence: the routing table's query, beside the chat (sequence 0)
ROUTER_QUERY_ROOM = 256  # cells kept free for the caller's words in the routing table's query
# A cut (`LlamaEngine.cut_out`) must serve this many more prompt tokens than the best plain prefix: it makes
# the later tokens' KV an approximation (computed with the cut tokens in view), worth it only for a lot.
MIN_CUT_GAIN = 64


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LocalModelConfig:
    model_path: Path
    n_ctx: int = 4096
    n_threads: int = field(default_factory=available_cores)
    n_batch: int = 512
    prefill_chunk: int = 64  # prompt tokens evaluated between two cancellation checks
    cache_bytes: int = 256 << 20  # saved KV states (about 12 KiB per token for this model)
    cache_entries: int = 32
    max_argument_tokens: int = 200
    # Grammar-only caps for strings and arrays the schema leaves unbounded, so that a greedy small model
    # stuck repeating itself still closes its JSON (the arguments are validated against the real schema).
    max_string_chars: int = 160
    argument_repeat_penalty: float = 1.3
    max_array_items: int = 16
    reply_examples: tuple[str, ...] = ct.DEFAULT_REPLY_EXAMPLES  # the routing table's no-tool examples


@dataclass
class EngineStats:
    """Counters since the engine was created, for tests and benchmarks."""

    turns: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_cached: int = 0
    generated_tokens: int = 0
    state_loads: int = 0
    batched_routes: int = 0  # routing-table queries evaluated in one batch with the chat prompt
    prepared: int = 0  # turns whose prompt was evaluated ahead (`_Turn.prepare`)
    prepared_hits: int = 0  # turns that began on the logits of the prepare just before them (`_Prepared`)
    cuts: int = 0  # saved states loaded with their oldest messages cut out (`LlamaEngine.cut_out`)
    cut_tokens: int = 0  # tokens those cuts removed


@dataclass(frozen=True)
class TurnRequest:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...]
    settings: GenerationSettings
    warm_only: bool = False  # compute and keep the frozen prefixes (chat and routing table), reply nothing
    prepare_only: bool = False  # evaluate this turn's prompt ahead and keep it (`_Turn.prepare`), reply nothing


@dataclass(frozen=True)
class TurnEnd:
    """The worker's last item for a turn."""

    finish_reason: FinishReason


class Stopped(Exception):
    """Raised inside the worker when the consumer has gone: the turn ends quietly."""


Emit = Callable[[LLMEvent | TurnEnd | BaseException], None]


class _Lru(OrderedDict[str, Any]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def get_or(self, key: str, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


class LlamaEngine:
    """One loaded model and its saved states. Everything but `submit` runs on the worker thread."""

    _shared: dict[LocalModelConfig, LlamaEngine] = {}  # noqa: RUF012 - the one-model-per-process registry
    _shared_lock = threading.Lock()

    def __init__(self, config: LocalModelConfig) -> None:
        self.config = config
        self.stats = EngineStats()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._lock = threading.Lock()
        self._llm: Llama | None = None
        self._cache = PrefixStateCache(config.cache_bytes, config.cache_entries)
        self._texts = _Lru(64)  # tokenized prompt prefixes
        self._grammars = _Lru(64)  # GBNF, by JSON Schema
        self._markup_openers: NDArray[np.intc] | None = None
        self.cores: Cores = CORES  # urgent speech work goes first (pipeline/cores.py)
        self.batch_routing = True  # the routing query beside the chat prompt (`_Turn.route_beside`); tests compare
        self.prepared: _Prepared | None = None  # the model's last decode was this prepare's batch

    @classmethod
    def shared(cls, config: LocalModelConfig) -> LlamaEngine:
        with cls._shared_lock:
            engine = cls._shared.get(config)
            if engine is None:
                engine = cls._shared[config] = cls(config)
            return engine

    def submit(self, request: TurnRequest, emit: Emit, cancel: threading.Event) -> concurrent.futures.Future[None]:
        return self.executor.submit(self.run_turn, request, emit, cancel)

    # --- on the worker thread -------------------------------------------------------------------

    def load(self) -> Llama:
        if self._llm is None:
            if not self.config.model_path.is_file():
                raise LLMRequestError(f"model file {self.config.model_path} does not exist")
            llm = Llama(
                str(self.config.model_path),
                n_ctx=self.config.n_ctx,
                n_batch=self.config.n_batch,
                n_threads=self.config.n_threads,
                n_threads_batch=self.config.n_threads,
                verbose=False,
            )
            self._llm = with_two_sequences(llm)
        return self._llm

    def run_turn(self, request: TurnRequest, emit: Emit, cancel: threading.Event) -> None:
        if cancel.is_set():
            return
        with self._lock:
            llm: Llama | None = None
            try:
                llm = self.load()
                turn = _Turn(self, llm, request, emit, cancel)
                turn.run()
                if turn.ended:  # after the turn's end went out: the consumer does not wait for this
                    turn.read_ahead()
            except Stopped:
                pass
            except BaseException as exc:  # every failure goes to the consumer, which raises it
                with contextlib.suppress(Stopped):
                    emit(exc)
            finally:
                self.stats.turns += 1
                # The conversation's state, for its next turn. Not after a warm-up: it kept its prefixes' states
                # (`remember`), and the model may still hold the last call's conversation, which kept here
                # would belong to no one and outlive that call (~4 MB each, until the cache was full).
                if llm is not None and not request.warm_only:
                    self.save_state(llm, owner=request.settings.prompt_cache_key)

    def forget(self, owner: str) -> int:
        """Drop the states kept for one conversation (`prompt_cache_key`); on the worker, like all cache use."""
        with self._lock:
            return self._cache.drop_owner(owner)

    def saved_states(self) -> tuple[int, int]:
        """How many KV states the cache keeps, and their bytes (for benchmarks: RSS that is bounded by design)."""
        return len(self._cache), self._cache.size_bytes

    def tokenize(self, llm: Llama, text: str) -> Tokens:
        return as_tokens(llm.tokenize(text.encode(), add_bos=False, special=True))

    def prefix_tokens(self, llm: Llama, text: str) -> Tokens:
        tokens: Tokens = self._texts.get_or(text, lambda: self.tokenize(llm, text))
        return tokens

    def gbnf(self, schema_json: str) -> str:
        """The GBNF of a JSON Schema (converted once per schema)."""
        source: str = self._grammars.get_or(schema_json, lambda: json_schema_to_gbnf(schema_json))
        return source

    def markup_openers(self, llm: Llama) -> NDArray[np.intc]:
        """Tokens whose text, leading spaces aside, opens markup: `{`, `[`, `<` (special tokens such as
        `<tool_call>` included) or a code fence. Found once per model by reading the whole vocabulary."""
        if self._markup_openers is None:
            openers = (b"{", b"[", b"<", b"`")
            pieces = (bytes(llm.detokenize([t], special=True)) for t in range(llm.n_vocab()))
            found = [t for t, piece in enumerate(pieces) if piece.lstrip()[:1] in openers]
            self._markup_openers = np.array(found, dtype=np.intc)
        return self._markup_openers

    def cache_hit(self, tokens: Tokens) -> tuple[int, SavedState] | None:
        """The saved state sharing the longest prefix with `tokens`, and that length."""
        return self._cache.best(tokens)

    def covers(self, tokens: Tokens) -> bool:
        hit = self.cache_hit(tokens)
        return hit is not None and hit[0] >= len(tokens)

    def save_state(self, llm: Llama, owner: str | None = None) -> None:
        """Keep the chat sequence's KV state, as the tokens the model holds."""
        if llm.n_tokens == 0:
            return
        self.save_sequence(llm, as_tokens(llm.input_ids[: llm.n_tokens]), 0, owner)

    def save_sequence(self, llm: Llama, tokens: Tokens, seq: int, owner: str | None) -> None:
        """Keep sequence `seq`'s KV state, which holds `tokens`."""
        size = llama_cpp.llama_state_seq_get_size(llm.ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llm.ctx, buffer, size, seq)
        self._cache.put(tokens, ctypes.string_at(buffer, written), owner)

    def prefill(self, llm: Llama, tokens: Tokens, cancel: threading.Event) -> int:
        """Make the model hold `tokens` evaluated, reusing what it or the cache has; returns tokens reused."""
        common = common_prefix(as_tokens(llm.input_ids[: llm.n_tokens]), tokens)
        if common == len(tokens) == llm.n_tokens and not llm._requires_eval:
            return common  # already evaluated, logits fresh
        keep = self.restore(llm, tokens)
        self.evaluate(llm, tokens, len(tokens), cancel)
        return keep

    def restore(self, llm: Llama, tokens: Tokens) -> int:
        """Make the model hold the longest prefix of `tokens` it or the cache has (never all of them: at least
        one is left to evaluate, for fresh logits); returns its length. Counts it as cached."""
        common = common_prefix(as_tokens(llm.input_ids[: llm.n_tokens]), tokens)
        hit = self._cache.best(tokens)
        cut = self._cache.best_cut(tokens) if self.can_shift(llm) else None
        if cut is not None and cut.length >= max(common, hit[0] if hit is not None else 0) + MIN_CUT_GAIN:
            common = self.cut_out(llm, cut)
        elif hit is not None and hit[0] > common:
            length, saved = hit
            if self.load_state(llm, saved, seq=0):
                llm.input_ids[: len(saved.tokens)] = saved.tokens
                llm.n_tokens = len(saved.tokens)
                llm._requires_eval = True
                common = length
            else:  # the saved state does not fit this context: start over
                llm.n_tokens = 0
                common = 0
        keep = min(common, len(tokens) - 1)
        llm.n_tokens = keep  # the next eval drops anything held beyond this
        self.stats.prompt_tokens_cached += keep
        return keep

    def can_shift(self, llm: Llama) -> bool:
        return bool(llama_cpp.llama_memory_can_shift(llama_cpp.llama_get_memory(llm.ctx)))

    def cut_out(self, llm: Llama, cut: Cut) -> int:
        """Load `cut.entry` into the chat sequence without the tokens `cut` removes, the ones after them moved
        down into their place (their positions shifted; llama.cpp re-rotates their keys); returns how many
        of the prompt's tokens the model then holds (0 when the state does not fit: start over).

        The tokens after the cut keep the KV computed while the cut ones were in view: an approximation, as
        in llama.cpp's own context shift, and what lets a call that outgrew the context go on at the cost of
        its new words instead of evaluating thousands of tokens (~10 ms each here) before every reply."""
        if not self.load_state(llm, cut.entry, seq=0):
            llm.n_tokens = 0
            return 0
        memory = llama_cpp.llama_get_memory(llm.ctx)
        end = cut.at + cut.width
        llama_cpp.llama_memory_seq_rm(memory, 0, cut.at, end)
        llama_cpp.llama_memory_seq_add(memory, 0, end, -1, -cut.width)
        kept = cut.tokens()
        llm.input_ids[: len(kept)] = kept
        llm.n_tokens = len(kept)
        llm._requires_eval = True
        self.stats.cuts += 1
        self.stats.cut_tokens += cut.width
        return cut.length

    def evaluate(self, llm: Llama, tokens: Tokens, end: int, cancel: threading.Event) -> None:
        """Evaluate `tokens[llm.n_tokens:end]`, a chunk at a time (checking for cancellation and urgent work)."""
        start = llm.n_tokens
        for at in range(start, end, self.config.prefill_chunk):
            with self.cores.batch():  # after urgent speech work, and Smart Turn after it (pipeline/cores.py)
                if cancel.is_set():
                    raise Stopped
                llm.eval(tokens[at : min(end, at + self.config.prefill_chunk)].tolist())
        self.stats.prompt_tokens_evaluated += max(0, end - start)

    def load_state(self, llm: Llama, saved: SavedState, *, seq: int) -> bool:
        """Load a saved KV state into sequence `seq` (0: the chat; `ROUTER_SEQ`: the routing table's query)."""
        buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
        if not llama_cpp.llama_state_seq_set_data(llm.ctx, buffer, len(saved.data), seq):
            return False
        self.stats.state_loads += 1
        return True


@dataclass
class _Prepared:
    """A prepare's batch, when it was the model's last decode: the chat `prompt` and the routing `query`
    evaluated whole, the logits of their last tokens kept at batch indices `at` (query, prompt), the query's
    KV still in `ROUTER_SEQ`. A turn with these very prompts begins from there, on the next decode's
    worth of work less (`_Turn.route_beside`)."""

    query: Tokens
    prompt: Tokens
    at: list[int]

    def holds(self, query: Tokens, prompt: Tokens, llm: Llama) -> bool:
        return (
            np.array_equal(self.query, query)
            and np.array_equal(self.prompt, prompt)
            and llm.n_tokens == len(prompt)
            and np.array_equal(llm.input_ids[: llm.n_tokens], prompt)
        )


class _Turn:
    """One model turn on the worker thread: route, then fill arguments or stream text."""

    def __init__(
        self, engine: LlamaEngine, llm: Llama, request: TurnRequest, emit: Emit, cancel: threading.Event
    ) -> None:
        self.engine, self.llm, self.request, self.emit, self.cancel = engine, llm, request, emit, cancel
        # Whatever this turn does, it decodes: the prepare's batch is the last decode only until then.
        self.prepared, engine.prepared = engine.prepared, None
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.special_stops = {int(t) for t in engine.tokenize(llm, ct.IM_START + ct.IM_END + ct.TOOL_CALL_START)}
        self.generated = 0  # tokens sampled this turn
        self.prompted = 0  # prompt tokens this turn (routing-table query + chat prompt)
        self.cached = 0  # of which served from the KV cache
        self.ended = False  # the reply ended at an end-of-turn token the model chose

    def run(self) -> None:
        request, settings = self.request, self.request.settings
        tools = request.tools
        if len({tool.name for tool in tools}) != len(tools):
            raise LLMRequestError("tool names must be unique")
        if request.warm_only:
            self.drop_prepared()
            self.remember(self.prompt_tokens()[0])
            if tools:
                self.remember(self.router_prefix())
            self.emit(TurnEnd("stop"))
            return
        if settings.tool_choice == "required" and not tools:
            raise LLMRequestError('tool_choice "required" needs at least one tool')
        choice = ct.NONE_ACTION
        caller = [message for message in request.messages if message.role == "user"]
        after_caller = bool(request.messages) and request.messages[-1].role == "user"
        # After a caller message the routing table decides; after a tool result the model speaks (it can
        # call another tool on the caller's next message) unless a tool call is required.
        wanted = settings.tool_choice == "required" or (settings.tool_choice == "auto" and after_caller)
        routing = bool(tools and caller and wanted)
        if settings.tool_choice == "required" and not routing:
            raise LLMRequestError('tool_choice "required" needs a caller message to route')
        prefix, prompt = self.prompt_tokens(reserve=len(self.router_prefix()) + ROUTER_QUERY_ROOM if routing else 0)
        self.remember(prefix)
        if not routing or request.prepare_only:
            self.drop_prepared()  # only a routed turn begins on a prepare's batch
        if request.prepare_only:
            self.prepare(caller[-1].content if routing else None, prompt)
            self.emit(TurnEnd("stop"))
            return
        if routing:
            choice = self.route_beside(caller[-1].content, settings.tool_choice == "auto", prompt)
        else:
            self.count_prompt(prompt)
        reason: FinishReason
        if choice == ct.NONE_ACTION:
            reason = self.reply(prompt)
        else:
            tool = next(tool for tool in tools if tool.name == choice)
            self.fill_arguments(_concat(prompt, self.engine.tokenize(self.llm, ct.tool_call_header(choice))), tool)
            reason = "tool_calls"
        self.emit(Usage(self.prompted, self.generated, self.cached))
        self.emit(TurnEnd(reason))

    def count_prompt(self, tokens: Tokens) -> None:
        self.cached += self.engine.prefill(self.llm, tokens, self.cancel)
        self.prompted += len(tokens)

    def remember(self, prefix: Tokens) -> None:
        """Keep the KV state of a frozen prefix (chat or routing table) unless the cache already covers it."""
        if not self.engine.covers(prefix):
            self.engine.prefill(self.llm, prefix, self.cancel)
            self.engine.save_state(self.llm)

    def prepare(self, utterance: str | None, prompt: Tokens) -> None:
        """Evaluate the chat `prompt` and, when the turn will route, the routing table's query for `utterance`,
        in one batch as `route_beside` does, and keep them: the turn that comes next with these messages
        begins on that batch's logits (`_Prepared`), and evaluates nothing; after another decode (another
        call's turn came between), on their saved states, and evaluates the last token of each.

        A call asks for this when Whisper has the caller's words ~64 ms into a pause (its speculation), ~0.13 s
        before the pause is long enough to end the turn; evaluating a voice turn's ~25 new tokens costs ~0.2 s
        here, so much of it is done by the time the turn ends. The chat state stays in the model (and
        is kept by `run_turn` as the conversation's); the routing query's stays beside it and goes into the
        cache. When the caller goes on instead, the next turn's prompt shares everything up to these words."""
        engine, llm = self.engine, self.llm
        engine.stats.prepared += 1
        query = self.router_query(utterance) if utterance is not None else None
        hit = self.batchable(query) if query is not None else None
        if query is None or hit is None:  # no query: the chat alone (its last logits stay the model's)
            engine.restore(llm, prompt)
            engine.evaluate(llm, prompt, len(prompt), self.cancel)
            return
        with self.beside(query, prompt, hit, keep_router=True) as (_, at):
            llm._requires_eval = False  # the batch's last logits are the chat's
            engine.save_sequence(llm, query, ROUTER_SEQ, self.request.settings.prompt_cache_key)
        engine.prepared = _Prepared(query, prompt, at)

    def drop_prepared(self) -> None:
        """The prepare's batch will not be begun on: its routing query leaves the KV cache."""
        if self.prepared is not None:
            self.prepared = None
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm.ctx), ROUTER_SEQ, -1, -1)

    def router_query(self, utterance: str) -> Tokens:
        """The routing table with the caller's `utterance` as its query (the routing table's state kept)."""
        router = self.router_prefix()
        self.remember(router)
        return _concat(router, self.engine.tokenize(self.llm, ct.router_query(utterance)))

    def batchable(self, query: Tokens) -> tuple[int, SavedState] | None:
        """The saved state the routing `query` is evaluated from beside the chat prompt (`beside`), when what is
        left of it fits one batch; None: the two are evaluated one after the other."""
        engine = self.engine
        hit = engine.cache_hit(query)
        if not engine.batch_routing or hit is None or hit[0] < len(self.router_prefix()):
            return None
        return hit if len(query) - hit[0] <= engine.config.prefill_chunk else None

    @contextlib.contextmanager
    def beside(
        self, query: Tokens, prompt: Tokens, hit: tuple[int, SavedState], *, keep_router: bool = False
    ) -> Iterator[tuple[int, list[int]]]:
        """The routing `query` (sequence `ROUTER_SEQ`, from the saved state `hit`) and the chat `prompt`'s last
        tokens (sequence 0), evaluated in one batch; yields how many of the prompt's tokens were kept from
        before, and the batch index of each one's last token (their logits are kept). The router sequence is
        emptied at the end, unless `keep_router` (and the block ran through)."""
        engine, llm = self.engine, self.llm
        self.drop_prepared()
        keep = engine.restore(llm, prompt)
        tail = max(keep, len(prompt) - engine.config.prefill_chunk)  # the prompt's last tokens go into the batch
        engine.evaluate(llm, prompt, tail, self.cancel)
        length, saved = hit
        length = min(length, len(query) - 1)  # (a prepared query is kept whole) its last token's logits are needed
        if not engine.load_state(llm, saved, seq=ROUTER_SEQ):
            raise LLMError("the routing table's saved state does not fit the model's context")
        memory = llama_cpp.llama_get_memory(llm.ctx)
        kept = False
        llama_cpp.llama_memory_seq_rm(memory, ROUTER_SEQ, length, -1)  # each sequence holds just its prefix
        llama_cpp.llama_memory_seq_rm(memory, 0, tail, -1)
        try:
            with engine.cores.batch():
                if self.cancel.is_set():
                    raise Stopped
                at = decode_batch(llm, [(ROUTER_SEQ, length, query[length:]), (0, tail, prompt[tail:])])
            engine.stats.prompt_tokens_evaluated += len(query) - length + len(prompt) - tail
            engine.stats.batched_routes += 1
            llm.input_ids[tail : len(prompt)] = prompt[tail:]
            llm.n_tokens = len(prompt)
            yield keep, at
            kept = keep_router
        finally:
            if not kept:
                llama_cpp.llama_memory_seq_rm(memory, ROUTER_SEQ, -1, -1)

    @contextlib.contextmanager
    def from_prepared(self, prepared: _Prepared) -> Iterator[tuple[int, list[int]]]:
        """What `beside` yields, from the prepare's batch (the model's last decode): nothing is evaluated. The
        router sequence is emptied at the end."""
        try:
            yield len(prepared.prompt), prepared.at
        finally:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm.ctx), ROUTER_SEQ, -1, -1)

    def route_beside(self, utterance: str, allow_none: bool, prompt: Tokens) -> str:
        """Step 1, continuing the routing table for `utterance` under a grammar of the declared names, with the
        chat `prompt` evaluated in the same batch.

        Both are short on a voice turn (the caller's words, ~10-30 tokens each), and a batch that short costs
        little more for twice the tokens: llama.cpp's prompt evaluation here took 206 ms for 15 tokens, 305 ms
        for 25 and 348 ms for 40. So the routing query runs as a second sequence (`ROUTER_SEQ`, loaded from
        the routing table's saved state) beside the chat prompt's last tokens. Longer prompts are evaluated
        one after the other, a chunk at a time, so that a cancelled turn stops soon. A turn whose prompts a
        prepare evaluated just before it begins on that batch instead (`_Prepared`)."""
        tools = self.request.tools
        label = ct.reply_label(tools)
        options = ct.decision_options(tools, allow_none, none_label=label)
        query = self.router_query(utterance)
        grammar = ct.router_grammar(options)
        llm, prepared = self.llm, self.prepared
        batch: contextlib.AbstractContextManager[tuple[int, list[int]]]
        if prepared is not None and prepared.holds(query, prompt, llm):
            self.prepared = None
            self.engine.stats.prepared_hits += 1
            batch, reused = self.from_prepared(prepared), len(query)
        else:
            hit = self.batchable(query)
            if hit is None:  # one after the other
                self.drop_prepared()
                self.count_prompt(query)
                choice = self.decide(self.constrained_after(query, grammar, limit=32), options, label)
                self.count_prompt(prompt)
                return choice
            batch, reused = self.beside(query, prompt, hit), min(hit[0], len(query) - 1)
        with batch as (keep, at):
            self.prompted += len(prompt) + len(query)
            self.cached += keep + reused
            self.engine.stats.prompt_tokens_cached += reused
            llm._requires_eval = False  # the batch's last logits are the chat's
            logits = logits_at(llm, at[0])
            position = len(query)

            def next_logits(token: int) -> NDArray[np.single]:
                nonlocal position
                llm._requires_eval = True  # the chat's logits are overwritten: its last token is evaluated again
                decode_batch(llm, [(ROUTER_SEQ, position, np.array([token], dtype=np.intc))])
                position += 1
                return logits_at(llm, 0)

            return self.decide(self.constrained_from(logits, next_logits, grammar, 32), options, label)

    def decide(self, tokens: Iterator[int], options: Sequence[str], label: str) -> str:
        """The routing table's choice, as soon as the tokens written pin it down."""
        written = ""
        for token in tokens:
            written += self.piece(token).decode("utf-8", errors="replace")
            choice = ct.decided(written, options, lead=ct.ROUTER_LEAD, end=ct.ROUTER_END)
            if choice is not None:
                return ct.NONE_ACTION if choice == label else choice
        raise LLMBadResponse(f"the model did not choose a tool (wrote {written!r})")

    def router_prefix(self) -> Tokens:
        """The routing table for this turn's tools: frozen per tool set."""
        text = ct.render_router_prefix(self.request.tools, self.engine.config.reply_examples)
        return self.engine.prefix_tokens(self.llm, text)

    def prompt_tokens(self, reserve: int = 0) -> tuple[Tokens, Tokens]:
        """The frozen prefix, and prefix + as much recent conversation as fits + assistant header (leaving
        `reserve` of the context's cells to the routing table beside it)."""
        system, conversation = ct.split_system(self.request.messages)
        prefix = self.engine.prefix_tokens(self.llm, ct.render_prefix(system, self.request.tools))
        header = self.engine.tokenize(self.llm, ct.assistant_header())
        reply = max(self.request.settings.max_tokens, self.engine.config.max_argument_tokens)
        budget = self.llm.n_ctx() - reply - reserve - 32
        messages = list(conversation)
        while True:
            body = self.engine.tokenize(self.llm, ct.render_conversation(messages))
            if len(prefix) + len(body) + len(header) <= budget:
                return prefix, _concat(prefix, body, header)
            if len(messages) <= 1:
                raise LLMRequestError("the system prompt, tools and latest message do not fit the context window")
            messages.pop(0)
            while messages and messages[0].role == "tool":
                messages.pop(0)  # never start with a tool result whose call was dropped

    def produced(self) -> None:
        """Count one sampled token; between tokens is where a cancelled turn stops, and where the next token
        waits for urgent speech work (pipeline/cores.py)."""
        if self.cancel.is_set():
            raise Stopped
        self.generated += 1
        self.engine.stats.generated_tokens += 1
        self.engine.cores.yield_to_urgent()

    def sample(self, tokens: Tokens, *, temperature: float) -> Iterator[int]:
        """Free text after `tokens`, ending before an end-of-turn token.

        The routing step has already decided that this is a text reply, so it may not open with markup: the
        0.5B model otherwise sometimes writes a tool call out as JSON instead (seen: one
        `{"name": "knowledge_lookup", ...}` line repeated until max_tokens, after the knowledge it asked for
        was already in its prompt). Until the first token with visible text, markup openers are masked.
        """
        self.engine.prefill(self.llm, tokens, self.cancel)
        openers = self.engine.markup_openers(self.llm)
        opening = True

        def no_markup_first(_: NDArray[np.intc], scores: NDArray[np.single]) -> NDArray[np.single]:
            if opening:
                scores[openers] = -np.inf
            return scores

        generated = self.llm.generate(
            tokens.tolist(), temp=temperature, repeat_penalty=1.0, reset=True,
            logits_processor=LogitsProcessorList([no_markup_first]),
        )  # fmt: skip
        for token in generated:
            if token in self.special_stops or llama_cpp.llama_vocab_is_eog(self.vocab, token):
                self.ended = True  # every token before this one has been evaluated
                return
            self.produced()
            if opening and self.piece(token).strip():
                opening = False
            yield token

    def constrained_after(self, tokens: Tokens, gbnf: str, *, limit: int, repeat_penalty: float = 1.0) -> Iterator[int]:
        """Greedy tokens after `tokens` under `gbnf` (checked lazily, see `constrained.GrammarSampler`).

        `repeat_penalty` (as llama.cpp applies it) weighs against words this step already wrote: greedy
        decoding of a small model otherwise loops ("Springfield, Springfield, ...") inside a JSON string.
        Only word tokens (three letters or more) count, so digits ("555-2323") and JSON punctuation repeat
        freely.
        """
        self.engine.prefill(self.llm, tokens, self.cancel)

        def next_logits(token: int) -> NDArray[np.single]:
            self.llm.eval([token])
            return logits_at(self.llm, -1)

        return self.constrained_from(logits_at(self.llm, -1), next_logits, gbnf, limit, repeat_penalty)

    def constrained_from(
        self,
        logits: NDArray[np.single],
        next_logits: Callable[[int], NDArray[np.single]],
        gbnf: str,
        limit: int,
        repeat_penalty: float = 1.0,
    ) -> Iterator[int]:
        """Greedy tokens under `gbnf` from `logits` on, `next_logits(token)` giving the logits after each."""
        n_vocab = self.llm.n_vocab()
        words: set[int] = set()
        with GrammarSampler(self.vocab, gbnf, n_vocab) as sampler:
            for _ in range(limit):
                if repeat_penalty != 1.0 and words:
                    logits = logits.copy()
                    seen = np.fromiter(words, dtype=np.intc)
                    values = logits[seen]
                    logits[seen] = np.where(values > 0, values / repeat_penalty, values * repeat_penalty)
                token = sampler.pick(logits)
                if sum(char.isalpha() for char in self.piece(token).decode("utf-8", errors="ignore")) >= 3:
                    words.add(token)
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    return
                self.produced()
                yield token
                logits = next_logits(token)

    def piece(self, token: int) -> bytes:
        return bytes(self.llm.detokenize([token]))

    def reply(self, tokens: Tokens) -> FinishReason:
        """Stream the text reply; 'stop' at end of turn or a stop string, 'length' at max_tokens."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = ct.StopMatcher()
        settings, started, count = self.request.settings, False, 0
        for token in self.sample(tokens, temperature=settings.temperature):
            count += 1
            text, stopped = stops.feed(decoder.decode(self.piece(token)))
            if not started:
                text = text.lstrip()
                started = bool(text)
            if text:
                self.emit(TextDelta(text))
            if stopped:
                return "stop"
            if count >= settings.max_tokens:
                break
        tail = (stops.flush() + decoder.decode(b"", final=True)).rstrip()
        if tail:
            self.emit(TextDelta(tail))
        return "length" if count >= settings.max_tokens else "stop"

    def read_ahead(self) -> None:
        """Evaluate what the next prompt has after this reply (`chat_template.after_reply`), so that it is in
        the conversation's saved state: ~5 tokens (~60 ms here) less before the next turn's first token.

        The caller is listening to the reply now, and the cores are idle once its speech is synthesized. The
        next prompt only reuses this when it renders the reply as these very tokens (the reply in full, as
        written, ended by the model: not cut at max_tokens or a stop string); one cut by a barge-in diverges
        earlier, and the cache serves the common part as before."""
        tokens = _concat(
            as_tokens(self.llm.input_ids[: self.llm.n_tokens]), self.engine.tokenize(self.llm, ct.after_reply())
        )
        self.engine.evaluate(self.llm, tokens, len(tokens), self.cancel)

    def fill_arguments(self, tokens: Tokens, tool: ToolSpec) -> None:
        """Step 2: the arguments, under the GBNF of the tool's schema, then validated against it."""
        schema = dict(tool.parameters)
        config = self.engine.config
        bounded = bounded_schema(schema, config.max_string_chars, config.max_array_items)
        gbnf: str = self.engine.gbnf(json.dumps(bounded))
        limit = self.engine.config.max_argument_tokens
        raw = b""
        arguments: Any = None
        for token in self.constrained_after(
            tokens, gbnf, limit=limit, repeat_penalty=self.engine.config.argument_repeat_penalty
        ):
            raw += self.piece(token)
            if raw.rstrip().endswith(b"}"):
                try:
                    arguments = json.loads(raw)
                    break
                except ValueError:
                    pass
        if arguments is None:
            try:
                arguments = json.loads(raw)
            except ValueError as exc:
                raise LLMBadResponse(f"arguments for {tool.name} did not finish within {limit} tokens") from exc
        try:
            jsonschema.validate(arguments, schema)
        except jsonschema.ValidationError as exc:
            raise LLMBadResponse(f"arguments for {tool.name} do not match its schema: {exc.message}") from exc
        self.emit(ToolCall(f"call_{uuid.uuid4().hex[:24]}", tool.name, arguments))


def _concat(*parts: Tokens) -> Tokens:
    return as_tokens(np.concatenate([as_tokens(part) for part in parts]))
