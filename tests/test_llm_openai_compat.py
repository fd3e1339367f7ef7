"""The OpenAI-compatible provider against a real HTTP/1.1 server on 127.0.0.1 that speaks the SSE protocol
from a script: text, tool-call fragments, 503-then-success, a stream that dies, a first token that never
comes, a 400, and a client that hangs up mid-stream."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.llm.errors import LLMBadResponse, LLMRequestError, LLMUnavailable
from pipeline.llm.openai_compat import OpenAICompatConfig, OpenAICompatProvider, request_json
from pipeline.llm.sse import ChunkAccumulator, SSEParser
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

ADDRESS_TOOL = ToolSpec(
    "check_service_area",
    "Check whether we deliver to an address.",
    {"type": "object", "properties": {"address": {"type": "string"}}, "required": ["address"]},
)
END_TOOL = ToolSpec(
    "end_call", "Hang up.", {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}
)
MESSAGES = [ChatMessage("system", "You are a pizza shop."), ChatMessage("user", "Do you deliver to 5 Elm St?")]


def content(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


def finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def tool_fragment(index: int, *, id: str | None = None, name: str | None = None, args: str = "") -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": args}
    if name:
        function["name"] = name
    call: dict[str, Any] = {"index": index, "function": function}
    if id:
        call.update(id=id, type="function")
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


USAGE = {
    "choices": [],
    "usage": {"prompt_tokens": 42, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 30}},
}


@dataclass
class Reply:
    status: int = 200
    chunks: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold_first: asyncio.Event | None = None  # the first chunk waits for this (a slow first token)
    die_after: int | None = None  # abort the connection after this many chunks
    then_wait_for_hangup: bool = False  # after the chunks, keep the stream open until the client leaves


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedServer:
    """A loopback HTTP/1.1 server answering each request with the next scripted `Reply`."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = deque(replies)
        self.requests: list[Seen] = []
        self.client_left = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            self.client_left.set()
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Seen(method, path, headers, json.loads(body) if body else {}))
        reply = self.replies.popleft()
        if reply.status != 200:
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            writer.write(
                f"HTTP/1.1 {reply.status} Error\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(reply.body)}\r\n\r\n".encode()
                + reply.body
            )
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        for index, chunk in enumerate(reply.chunks):
            if index == 0 and reply.hold_first is not None and not await self._held(reply.hold_first, reader):
                return False
            await self._send(writer, f"data: {json.dumps(chunk)}\n\n")
            if reply.die_after == index + 1:
                writer.transport.abort()
                return False
        if reply.then_wait_for_hangup:
            if await reader.read(1) == b"":
                self.client_left.set()
            return False
        await self._send(writer, "data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _held(self, hold: asyncio.Event, reader: asyncio.StreamReader) -> bool:
        """Wait for `hold`; False (and `client_left` set) if the client hangs up first."""
        released = asyncio.ensure_future(hold.wait())
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait([released, hangup], return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            hangup.cancel()
        if hangup.done() and not hangup.cancelled() and hangup.result() == b"":
            self.client_left.set()
            return False
        return True

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()


def provider(server: ScriptedServer, **overrides: Any) -> OpenAICompatProvider:
    config = OpenAICompatConfig(
        base_url=server.base_url, model="test-model", api_key="sk-test", backoff_s=0.01, **overrides
    )
    return OpenAICompatProvider(config)


async def collect(
    llm: OpenAICompatProvider, tools: list[ToolSpec], settings: GenerationSettings | None = None
) -> list[LLMEvent]:
    try:
        return [event async for event in llm.stream(MESSAGES, tools, settings or GenerationSettings())]
    finally:
        await llm.aclose()


async def test_text_streams_with_usage_and_timings() -> None:
    reply = Reply(chunks=[content("We "), content("deliver "), content("there."), finish("stop"), USAGE])
    async with ScriptedServer(reply) as server:
        events = await collect(provider(server), [ADDRESS_TOOL], GenerationSettings(max_tokens=64))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["We ", "deliver ", "there."]
    assert events[-2] == Usage(42, 7, 30)
    done = events[-1]
    assert isinstance(done, Finished) and done.finish_reason == "stop"
    assert done.ttft_s is not None and 0 <= done.ttft_s <= done.total_s
    (seen,) = server.requests
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.body["model"] == "test-model" and seen.body["stream"] is True and seen.body["max_tokens"] == 64
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["tools"][0]["function"]["name"] == "check_service_area"
    assert seen.body["tool_choice"] == "auto"


async def test_tool_call_fragments_are_joined_by_index() -> None:
    reply = Reply(
        chunks=[
            tool_fragment(0, id="call_a", name="check_service_area", args='{"addr'),
            tool_fragment(1, id="call_b", name="end_call", args='{"reason": '),
            tool_fragment(0, args='ess": "5 Elm'),
            tool_fragment(1, args='"done"}'),
            tool_fragment(0, args=' St"}'),
            finish("tool_calls"),
        ]
    )
    async with ScriptedServer(reply) as server:
        events = await collect(provider(server), [ADDRESS_TOOL, END_TOOL])
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall("call_a", "check_service_area", {"address": "5 Elm St"}),
        ToolCall("call_b", "end_call", {"reason": "done"}),
    ]
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "tool_calls"


async def test_503_then_success_is_retried_once() -> None:
    busy = Reply(status=503, body=b'{"error": {"message": "overloaded"}}')
    ok = Reply(chunks=[content("Hello"), finish("stop")])
    async with ScriptedServer(busy, ok) as server:
        events = await collect(provider(server), [])
    assert len(server.requests) == 2
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello"]


async def test_429_honours_retry_after_then_gives_up_after_max_attempts() -> None:
    limited = [Reply(status=429, body=b"slow down", headers={"retry-after": "0"}) for _ in range(2)]
    async with ScriptedServer(*limited) as server:
        with pytest.raises(LLMUnavailable) as caught:
            await collect(provider(server, max_attempts=2), [])
    assert caught.value.status == 429 and not caught.value.partial
    assert len(server.requests) == 2


async def test_stream_dying_midway_is_not_retried_and_raises_after_partial_output() -> None:
    dying = Reply(chunks=[content("We do "), content("deliver to"), content(" never sent")], die_after=2)
    spare = Reply(chunks=[content("SHOULD NOT BE USED"), finish("stop")])
    received: list[str] = []
    async with ScriptedServer(dying, spare) as server:
        llm = provider(server)
        with pytest.raises(LLMUnavailable) as caught:
            async for event in llm.stream(MESSAGES, [], GenerationSettings()):
                if isinstance(event, TextDelta):
                    received.append(event.text)
        await llm.aclose()
    assert received == ["We do ", "deliver to"]
    assert caught.value.partial
    assert len(server.requests) == 1  # no retry once text went out


async def test_slow_first_token_times_out() -> None:
    never = asyncio.Event()
    async with ScriptedServer(Reply(chunks=[content("late")], hold_first=never)) as server:
        llm = provider(server, first_token_timeout_s=0.2, max_attempts=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LLMUnavailable, match="first token"):
            await collect(llm, [])
        assert loop.time() - started < 2.0
        await asyncio.wait_for(server.client_left.wait(), 5)  # the client hung up on the slow stream


async def test_first_token_timeout_is_retried_when_attempts_remain() -> None:
    never = asyncio.Event()
    slow = Reply(chunks=[content("late")], hold_first=never)
    ok = Reply(chunks=[content("on time"), finish("stop")])
    async with ScriptedServer(slow, ok) as server:
        events = await collect(provider(server, first_token_timeout_s=0.2, max_attempts=2), [])
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["on time"]
    assert len(server.requests) == 2


async def test_bad_request_is_not_retried() -> None:
    async with ScriptedServer(Reply(status=400, body=b'{"error": "context too long"}')) as server:
        with pytest.raises(LLMRequestError) as caught:
            await collect(provider(server), [])
    assert caught.value.status == 400 and len(server.requests) == 1


async def test_connection_refused_is_unavailable() -> None:
    async with ScriptedServer() as server:
        port = server.port
    llm = OpenAICompatProvider(
        OpenAICompatConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_attempts=2, backoff_s=0.01)
    )
    with pytest.raises(LLMUnavailable, match="could not talk"):
        await collect(llm, [])


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([tool_fragment(0, id="c", name="order_pizza", args="{}"), finish("tool_calls")], "undeclared tool"),
        ([tool_fragment(0, id="c", name="check_service_area", args='{"address": 5}'), finish("tool_calls")], "schema"),
        ([tool_fragment(0, id="c", name="check_service_area", args='{"address": '), finish("tool_calls")], "not JSON"),
    ],
)
async def test_invalid_tool_calls_are_bad_responses(chunks: list[dict[str, Any]], message: str) -> None:
    async with ScriptedServer(Reply(chunks=chunks)) as server:
        with pytest.raises(LLMBadResponse, match=message):
            await collect(provider(server), [ADDRESS_TOOL])
    assert len(server.requests) == 1


async def test_closing_the_stream_early_hangs_up_on_the_endpoint() -> None:
    reply = Reply(chunks=[content("one "), content("two ")], then_wait_for_hangup=True)
    async with ScriptedServer(reply) as server:
        llm = provider(server)
        stream = llm.stream(MESSAGES, [], GenerationSettings())
        first = await anext(stream)
        assert first == TextDelta("one ")
        await stream.aclose()
        await asyncio.wait_for(server.client_left.wait(), 5)
        await llm.aclose()


def test_config_from_env() -> None:
    assert OpenAICompatConfig.from_env({}) is None
    config = OpenAICompatConfig.from_env(
        {"FLOWYTE_LLM_BASE_URL": "https://llm.internal/v1/", "FLOWYTE_LLM_MODEL": "m1", "FLOWYTE_LLM_API_KEY": "k"}
    )
    assert config is not None
    assert config.url == "https://llm.internal/v1/chat/completions" and config.model == "m1" and config.api_key == "k"
    with pytest.raises(ValueError, match="FLOWYTE_LLM_MODEL"):
        OpenAICompatConfig.from_env({"FLOWYTE_LLM_BASE_URL": "https://x"})


def test_history_with_tool_calls_serializes_like_openai() -> None:
    call = ToolCall("call_1", "check_service_area", {"address": "5 Elm"})
    history = [
        *MESSAGES,
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"inside": true}', tool_call_id="call_1", name="check_service_area"),
    ]
    body = request_json(OpenAICompatConfig("http://x", "m"), history, [ADDRESS_TOOL], GenerationSettings())
    assistant, tool = body["messages"][2:]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"] == {"name": "check_service_area", "arguments": '{"address": "5 Elm"}'}
    assert tool == {
        "role": "tool",
        "content": '{"inside": true}',
        "tool_call_id": "call_1",
        "name": "check_service_area",
    }


def test_sse_parser_joins_data_lines_and_ignores_comments() -> None:
    parser = SSEParser()
    fed = [parser.feed_line(line) for line in [": ping", "event: x", 'data: {"a":', "data:1}", ""]]
    assert fed == [None, None, None, None, '{"a":\n1}']
    assert parser.feed_line("data: [DONE]") is None and parser.close() == "[DONE]"


def test_chunk_accumulator_reports_mid_stream_errors() -> None:
    with pytest.raises(LLMUnavailable, match="overloaded"):
        ChunkAccumulator([]).feed(json.dumps({"error": {"message": "overloaded"}}))
    with pytest.raises(LLMBadResponse):
        ChunkAccumulator([]).feed("not json")
