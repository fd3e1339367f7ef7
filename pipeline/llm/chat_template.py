"""Prompt text and grammars for the local model (Qwen2.5 ChatML), sans-I/O: strings in, strings out.

We format prompts ourselves instead of running the GGUF's Jinja template because the KV-cache prefix only
helps when the frozen parts (system prompt with tools, routing table) render to the *same bytes* every turn.

Decide-then-fill. A tool call takes two grammar-constrained steps, so the small model can only ever name
a declared tool and only write arguments of the schema's shape:

1. Decide, on a separate *routing table* prompt: a few-shot Python dict from caller phrasings (each tool's
   `examples`, or its description when it has none, plus a few no-tool examples) to tool names, which
   the model continues for the caller's latest message under a GBNF allowing only the declared names or
   "reply" (the no-tool choice):

       <|im_start|>user
       Complete the code.<|im_end|>
       <|im_start|>assistant
       ```python
       ROUTES = {
           "Do you deliver to 10 Spring Street?": "check_service_area",
           "Order two Margheritas for pickup, phone 555-1111.": "submit_order",
           "Hello!": "reply",
           ...
           "Can I speak to the manager?": "          <- continued under the grammar

   Qwen2.5-Coder continues a code pattern far more reliably than it follows a tool list written in
   prose: on benchmarks/tool_routing.py this table routes about 9 in 10 right where an "Action: <name>"
   line after a numbered tool list in the system prompt routed about 1 in 3, mostly to "none". Putting
   the descriptions or a numbered list above the table made it worse (about 8 in 10), so it has neither.
   "reply" routes better there than "none".
2. Fill, in the chat prompt: for a tool, the assistant turn starts as Qwen writes its own tool calls,
   `<tool_call>\n{"name": "<name>", "arguments": `, and continues under a GBNF compiled from the tool's
   JSON Schema. For "reply" the assistant turn is ordinary, unconstrained text.

The chat prompt is Qwen's own tool-calling layout (what the model was tuned on), rendered identically to
its Jinja template: `prefix + conversation + "<|im_start|>assistant\n"`, where the prefix is the system
prompt followed by `# Tools` and one JSON line per tool. The prefix depends only on the system prompt and
the tools, so it is byte-identical for every turn of every conversation of one agent version and its KV
state is computed once (so is the routing table's). Earlier tool calls render as `<tool_call>` blocks in
the assistant turn, their results as a user turn of `<tool_response>` blocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.llm.types import ChatMessage, ToolSpec

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL_START = "<tool_call>"
NONE_ACTION = "none"
DEFAULT_SYSTEM = "You are a helpful assistant."
TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)


def _block(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def tool_json(tool: ToolSpec) -> str:
    function = {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}
    return _json({"type": "function", "function": function})


def render_prefix(system: str, tools: Sequence[ToolSpec]) -> str:
    """The frozen part of every chat prompt: the system prompt and, with tools, their signatures."""
    body = system.strip() or DEFAULT_SYSTEM
    if tools:
        body += TOOLS_INTRO + "".join("\n" + tool_json(tool) for tool in tools) + TOOLS_OUTRO
    return _block("system", body)


def split_system(messages: Sequence[ChatMessage]) -> tuple[str, Sequence[ChatMessage]]:
    """The leading system message's text, and the rest of the conversation."""
    if messages and messages[0].role == "system":
        return messages[0].content, messages[1:]
    return "", messages


def render_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    return f'{TOOL_CALL_START}\n{{"name": {_json(name)}, "arguments": {_json(dict(arguments))}}}\n</tool_call>'


def render_assistant(message: ChatMessage) -> str:
    if not message.tool_calls:
        return _block("assistant", message.content)
    parts = [message.content] if message.content else []
    parts += [render_tool_call(call.name, call.arguments) for call in message.tool_calls]
    return _block("assistant", "\n".join(parts))


def render_conversation(messages: Sequence[ChatMessage]) -> str:
    """Everything after the prefix, up to (not including) the assistant header of the new turn."""
    out: list[str] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        if message.role == "tool":
            results = []
            while index < len(messages) and messages[index].role == "tool":
                results.append(f"<tool_response>\n{messages[index].content}\n</tool_response>")
                index += 1
            out.append(_block("user", "\n".join(results)))
            continue
        out.append(render_assistant(message) if message.role == "assistant" else _block(message.role, message.content))
        index += 1
    return "".join(out)


def assistant_header() -> str:
    return f"{IM_START}assistant\n"


def after_reply() -> str:
    """What follows a text reply in every later prompt: its end, and the header of the next (user) message
    (a caller's words and a tool's results are both user messages in Qwen's template)."""
    return f"{IM_END}\n{IM_START}user\n"


def tool_call_header(name: str) -> str:
    """Where the arguments start: the JSON-schema grammar continues right after this."""
    return f'{TOOL_CALL_START}\n{{"name": {_json(name)}, "arguments": '


def _gbnf_literal(text: str) -> str:
    return json.dumps(text)  # GBNF string literals use the same escapes as JSON for these characters


def decision_options(tools: Sequence[ToolSpec], allow_none: bool, none_label: str = NONE_ACTION) -> list[str]:
    names = [tool.name for tool in tools]
    return [*names, none_label] if allow_none else names


def decision_grammar(options: Sequence[str], *, lead: str = "", end: str = '"') -> str:
    """GBNF: `lead`, exactly one of `options`, then `end` (the routing table: no lead, a closing quote)."""
    alternatives = " | ".join(_gbnf_literal(option) for option in options)
    head = f"{_gbnf_literal(lead)} " if lead else ""
    return f"root ::= {head}({alternatives}) {_gbnf_literal(end)}\n"


def decided(text: str, options: Sequence[str], *, lead: str = "", end: str = '"') -> str | None:
    """The option that `text` (what the model wrote so far under `decision_grammar`) pins down, if any."""
    if lead and not text.startswith(lead):
        return None
    written = text[len(lead) :]
    if not written:
        return None
    if written.endswith(end):  # complete: also settles an option that is a prefix of another
        exact = [option for option in options if written[: -len(end)] == option]
        return exact[0] if exact else None
    fitting = [option for option in options if option.startswith(written)]
    return fitting[0] if len(fitting) == 1 else None


# --- the routing table -------------------------------------------------------------------------

ROUTER_INTRO = f"{IM_START}user\nComplete the code.{IM_END}\n{IM_START}assistant\n```python\nROUTES = {{\n"
ROUTER_LEAD, ROUTER_END = "", '"'
REPLY_LABELS = ("reply", "respond", "answer_directly")
# No-tool examples every agent shares: greetings, small talk, questions its system prompt answers.
DEFAULT_REPLY_EXAMPLES = (
    "Hello!",
    "Good morning, how are you?",
    "What are your hours?",
    "How much does it cost?",
    "Sorry, what did you say?",
    # A statement that is not a farewell: with none among the examples, speech misheard into an odd
    # statement ("You fell through my free cry.") was taken for one and the call was hung up.
    "I left my phone in your car.",
)
MAX_ROUTED_CHARS = 300


def reply_label(tools: Sequence[ToolSpec]) -> str:
    """The routing table's word for "no tool": "reply", unless a tool already has that name."""
    names = {tool.name for tool in tools}
    return next(label for label in (*REPLY_LABELS, NONE_ACTION) if label not in names)


def render_router_prefix(tools: Sequence[ToolSpec], reply_examples: Sequence[str] = DEFAULT_REPLY_EXAMPLES) -> str:
    """The frozen part of the routing prompt: examples interleaved round by round (tool 1, tool 2, ...)."""
    columns = [[(example, tool.name) for example in (tool.examples or (tool.description,))] for tool in tools]
    columns.append([(example, reply_label(tools)) for example in reply_examples])
    rows = [column[i] for i in range(max(map(len, columns))) for column in columns if i < len(column)]
    lines = [f"    {_json(' '.join(example.split()))}: {_json(name)}," for example, name in rows]
    return ROUTER_INTRO + "".join(line + "\n" for line in lines)


def router_query(utterance: str) -> str:
    """The per-turn part: the caller's message as a new key, and the opening quote of its value."""
    text = " ".join(utterance.split())[:MAX_ROUTED_CHARS]
    return f"    {_json(text)}: {ROUTER_END}"


def router_grammar(options: Sequence[str]) -> str:
    return decision_grammar(options, lead=ROUTER_LEAD, end=ROUTER_END)


# The model sometimes runs on past its reply into a new action or a new turn; text stops there.
REPLY_STOPS = (TOOL_CALL_START, IM_START, IM_END)


class StopMatcher:
    """Streams text through, cutting it at the first stop string.

    Text that might be the start of a stop string is held back until the next piece shows whether it
    is; `feed()` returns what is safe to emit and whether a stop string was reached.
    """

    def __init__(self, stops: Sequence[str] = REPLY_STOPS) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        text = self.pending + piece
        cut = min((i for i in (text.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending = ""
            return text[:cut], True
        hold = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:length]):
                    hold = length
                    break
        self.pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text
