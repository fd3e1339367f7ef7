"""The sans-I/O parts of the local provider: prompt text, decision grammar, stop strings, prefix cache."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pipeline.llm import chat_template as ct
from pipeline.llm.prefix_cache import PrefixStateCache, as_tokens, common_prefix
from pipeline.llm.types import ChatMessage, ToolCall, ToolSpec

TOOLS = [
    ToolSpec("check_service_area", "Check an address.", {"type": "object", "properties": {"address": {}}}),
    ToolSpec("end_call", "Hang up.", {"type": "object", "properties": {"reason": {}}}),
]


def test_prefix_is_byte_identical_across_turns_and_matches_qwens_tool_layout() -> None:
    first = [ChatMessage("system", "You are Tony's Pizza."), ChatMessage("user", "hi")]
    later = [*first, ChatMessage("assistant", "Hello!"), ChatMessage("user", "bye")]
    prefixes = {ct.render_prefix(ct.split_system(m)[0], TOOLS) for m in (first, later)}
    assert len(prefixes) == 1
    (prefix,) = prefixes
    assert prefix.startswith("<|im_start|>system\nYou are Tony's Pizza.\n\n# Tools\n\n")
    assert (
        '\n{"type": "function", "function": {"name": "check_service_area", "description": "Check an address."' in prefix
    )
    assert prefix.endswith("</tool_call><|im_end|>\n")
    assert ct.render_prefix("", []) == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


def test_conversation_renders_tool_calls_and_grouped_tool_results_as_qwen_does() -> None:
    call = ToolCall("c1", "check_service_area", {"address": "5 Elm"})
    messages = [
        ChatMessage("user", "Do you deliver to 5 Elm?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"inside": true}', tool_call_id="c1", name="check_service_area"),
        ChatMessage("tool", '{"fee": 3}', tool_call_id="c2", name="check_service_area"),
        ChatMessage("assistant", "Yes, we do."),
    ]
    assert ct.render_conversation(messages) == (
        "<|im_start|>user\nDo you deliver to 5 Elm?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "check_service_area", "arguments": {"address": "5 Elm"}}'
        "\n</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"inside": true}\n</tool_response>\n'
        '<tool_response>\n{"fee": 3}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nYes, we do.<|im_end|>\n"
    )
    assert ct.tool_call_header("end_call") == '<tool_call>\n{"name": "end_call", "arguments": '


def test_routing_table_interleaves_examples_and_falls_back_to_descriptions() -> None:
    tools = [
        ToolSpec("check_service_area", "Check an address.", examples=("Do you deliver to 1 A St?", "Is 2 B Rd ok?")),
        ToolSpec("end_call", "Hang up."),
    ]
    table = ct.render_router_prefix(tools, reply_examples=("Hello!",))
    assert table.endswith(
        "ROUTES = {\n"
        '    "Do you deliver to 1 A St?": "check_service_area",\n'
        '    "Hang up.": "end_call",\n'
        '    "Hello!": "reply",\n'
        '    "Is 2 B Rd ok?": "check_service_area",\n'
    )
    assert ct.router_query('  Say  "hi"\n') == '    "Say \\"hi\\"": "'
    assert ct.reply_label([ToolSpec("reply", "x")]) == "respond"


def test_decision_grammar_lists_exactly_the_options() -> None:
    options = ct.decision_options(TOOLS, allow_none=True, none_label="reply")
    assert options == ["check_service_area", "end_call", "reply"]
    assert ct.router_grammar(options) == 'root ::= ("check_service_area" | "end_call" | "reply") "\\""\n'
    assert ct.decision_options(TOOLS, allow_none=False) == ["check_service_area", "end_call"]
    assert ct.decision_grammar(["a"], lead=" ", end="\n") == 'root ::= " " ("a") "\\n"\n'


def test_decided_waits_until_the_text_pins_down_one_option() -> None:
    options = ["take_message", "take_order", "end", "end_call", "reply"]
    assert ct.decided("", options) is None
    assert ct.decided("take", options) is None
    assert ct.decided("take_m", options) == "take_message"
    assert ct.decided("end", options) is None  # "end" or "end_call"?
    assert ct.decided('end"', options) == "end"
    assert ct.decided("r", options) == "reply"
    assert ct.decided(" end\n", ["end", "end_call"], lead=" ", end="\n") == "end"


@given(st.lists(st.text(alphabet="ab\nAction:<|im_start>", max_size=6), max_size=12))
def test_stop_matcher_emits_exactly_the_text_before_the_first_stop(pieces: list[str]) -> None:
    whole = "".join(pieces)
    cuts = [i for i in (whole.find(stop) for stop in ct.REPLY_STOPS) if i >= 0]
    expected = whole[: min(cuts)] if cuts else whole
    matcher, out, stopped = ct.StopMatcher(), "", False
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out += text
        if stopped:
            break
    if not stopped:
        out += matcher.flush()
    assert out == expected
    assert stopped == bool(cuts)


def test_prefix_cache_finds_the_longest_shared_prefix_and_supersedes_its_own_prefixes() -> None:
    cache = PrefixStateCache(max_bytes=100, max_entries=3)
    system = [1, 2, 3, 4]
    cache.put(as_tokens([*system, 10, 11]), b"a" * 10)  # conversation A, turn 1
    cache.put(as_tokens([*system, 20]), b"b" * 10)  # conversation B, turn 1
    cache.put(as_tokens([*system, 10, 11, 12, 13]), b"c" * 10)  # A, turn 2 replaces A, turn 1
    assert len(cache) == 2 and cache.size_bytes == 20
    hit = cache.best(as_tokens([*system, 10, 11, 12, 13, 14]))
    assert hit is not None and hit[0] == 8 and hit[1].data == b"c" * 10
    hit = cache.best(as_tokens([*system, 10, 11, 99]))
    assert hit is not None and hit[0] == 6 and hit[1].data == b"c" * 10
    hit = cache.best(as_tokens([*system, 20, 21]))
    assert hit is not None and hit[0] == 5 and hit[1].data == b"b" * 10
    hit = cache.best(as_tokens([*system, 99]))  # a new conversation still shares the system prefix
    assert hit is not None and hit[0] == 4
    assert cache.best(as_tokens([7, 7])) is None


def test_a_conversations_states_are_its_own_and_go_with_it() -> None:
    cache = PrefixStateCache(max_bytes=100, max_entries=5)
    system = [1, 2, 3, 4]
    cache.put(as_tokens(system), b"s" * 10)  # the shared prefix (no owner)
    cache.put(as_tokens([*system, 10]), b"a" * 10, owner="call-a")
    cache.put(as_tokens([*system, 10, 11]), b"A" * 10, owner="call-a")  # supersedes call-a's own turn 1
    cache.put(as_tokens([*system, 20]), b"b" * 10, owner="call-b")
    assert len(cache) == 3, "the shared prefix is kept: another owner's state does not supersede it"
    assert cache.drop_owner("call-a") == 1 and cache.drop_owner("call-a") == 0
    hit = cache.best(as_tokens([*system, 10, 11]))
    assert hit is not None and hit[0] == 4 and hit[1].data == b"s" * 10  # back to the shared prefix
    assert len(cache) == 2 and cache.size_bytes == 20


def test_prefix_cache_evicts_least_recently_used_within_its_bounds() -> None:
    cache = PrefixStateCache(max_bytes=25, max_entries=10)
    for n in range(3):
        cache.put(as_tokens([n, n]), bytes(10))
    assert len(cache) == 2 and cache.best(as_tokens([0, 0])) is None
    cache.put(as_tokens([5]), bytes(26))  # larger than the whole cache: not kept
    assert len(cache) == 2


@given(st.lists(st.integers(0, 3), max_size=20), st.lists(st.integers(0, 3), max_size=20))
def test_common_prefix_matches_a_plain_loop(a: list[int], b: list[int]) -> None:
    expected = 0
    while expected < min(len(a), len(b)) and a[expected] == b[expected]:
        expected += 1
    assert common_prefix(np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)) == expected


def test_a_prompt_that_dropped_its_oldest_messages_is_matched_by_the_state_with_them_cut_out() -> None:
    """A conversation that outgrew the context: the prompt is the frozen prefix (1, 2), then the messages
    after the dropped ones. Plain prefixes share only (1, 2); cutting (7, 3, 8) out of the conversation's last
    state matches the rest."""
    cache = PrefixStateCache(max_bytes=1000, max_entries=5)
    cache.put(as_tokens([1, 2, 7, 3, 8, 7, 4, 9, 7, 5]), b"mine", owner="a")
    cache.put(as_tokens([1, 2, 7, 6, 6, 7, 6]), b"another call", owner="b")
    prompt = as_tokens([1, 2, 7, 4, 9, 7, 5, 7, 0])
    best = cache.best(prompt)
    assert best is not None and best[0] == 3  # (1, 2, 7): nothing of the conversation
    cut = cache.best_cut(prompt)
    assert cut is not None and cut.entry.data == b"mine"
    assert (cut.at, cut.width, cut.length) == (3, 3, 7)
    assert cut.tokens().tolist() == [1, 2, 7, 4, 9, 7, 5] == prompt[:7].tolist()
    assert cache.best_cut(as_tokens([1, 2, 7, 3, 8, 7, 4, 9, 7, 5, 7, 0])) is None  # extends a state: no cut
