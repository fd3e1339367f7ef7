"""The OpenAI chat-completions wire shapes: the request as read, the `ChatCompletion`, and stream chunks.

Only `model` (the agent id), `messages`, `stream` and `user` are read; every other field an OpenAI client
sends (temperature, tools, stream_options, ...) is accepted and ignored, since the published agent's own
configuration governs sampling, tools and the system prompt. Roles system (and its newer name
developer), user, assistant and tool are accepted; the agent's prompt replaces any system message and
the agent's own skills replace client-side tools, so only user and assistant text becomes the context.
The last message must be the user's: it is the one answered.

A stream is `data: <chunk>` frames: the role first, then content deltas, then an empty delta with
`finish_reason: "stop"`, then `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from control_api.errors import field_error
from pipeline.llm.types import ChatMessage


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class CompletionRequest(BaseModel):
    """OpenAI-compatible request; `model` is the agent id."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, description="The agent id.")
    messages: list[CompletionMessage] = Field(min_length=1, max_length=1000)
    stream: bool | None = False
    user: str | None = Field(None, description="Your end user's id; kept on the conversation record.")


def split_messages(messages: list[CompletionMessage]) -> tuple[list[ChatMessage], str]:
    """(the context before the last message, the last message's text): the turn to answer."""
    last = messages[-1]
    question = last.text().strip()
    if last.role != "user" or not question:
        raise field_error(f"messages[{len(messages) - 1}]", "must be a user message with text: it is the one answered")
    history = [
        ChatMessage("user" if m.role == "user" else "assistant", m.text())
        for m in messages[:-1]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    return history, question


def completion(completion_id: str, created: int, model: str, text: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}
        ],
    }


def chunk(
    completion_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


class ReplyText:
    """Turns the brain's `agent_delta` / `agent_message` events into the content deltas of one reply.

    Deltas pass through. A complete `agent_message` adds whatever its text has beyond the deltas already
    sent for it (all of it, when it was not streamed, e.g. an apology). Several agent messages in one
    turn are joined by a blank line, as in the non-streamed answer.
    """

    SEPARATOR = "\n\n"

    def __init__(self) -> None:
        self.segments = 0  # agent messages completed so far
        self.current = ""  # text sent for the message in progress

    def _open(self, text: str) -> str:
        return (self.SEPARATOR if self.segments and not self.current else "") + text

    def delta(self, text: str) -> str:
        if not text:
            return ""
        out = self._open(text)
        self.current += text
        return out

    def message(self, text: str) -> str:
        rest = text[len(self.current):] if text.startswith(self.current) else ""
        out = self._open(rest) if rest else ""
        if not text.strip() and not self.current:
            out = ""
        self.segments += 1 if (text.strip() or self.current) else 0
        self.current = ""
        return out
