"""LLM providers behind one streaming interface.

Every provider implements `LLMProvider.stream(messages, tools, settings)`, an async iterator of
`TextDelta`, `ToolCall`, `Usage` and, last, `Finished` (finish reason, time to first token, total time).
A provider only *proposes* tool calls; the runtime executes them and appends the results as `tool`
messages. Closing the iterator early (`aclose()`) cancels generation.

    local_llama.LocalLlamaProvider   in-process llama.cpp, the offline default (Qwen2.5-Coder-0.5B)
    openai_compat.OpenAICompatProvider  any OpenAI-compatible `/chat/completions` endpoint, over httpx
    scripted.ScriptedLLM             a scripted fake with a set time to first token, for tests
"""

from pipeline.llm.errors import LLMBadResponse, LLMError, LLMUnavailable
from pipeline.llm.provider import LLMProvider
from pipeline.llm.types import (
    ChatMessage,
    Finished,
    GenerationSettings,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "ChatMessage",
    "Finished",
    "GenerationSettings",
    "LLMBadResponse",
    "LLMError",
    "LLMEvent",
    "LLMProvider",
    "LLMUnavailable",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
]
