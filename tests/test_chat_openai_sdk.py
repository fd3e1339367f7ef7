"""`POST /chat/completions` driven by the real `openai` clients against a real server on 127.0.0.1: the
Python SDK (sync and async, streamed and not, its error classes) and the npm package (node)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import openai
import pytest

from control_api.services import Services
from tests import test_chat_support as support
from tests.conftest import Tenant
from tests.test_chat_support import LiveServer, Script, fund, published_agent

script, live = support.script, support.live

JS_DIR = Path(__file__).parent / "js"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "What are your hours?"}]


async def test_python_sdk_async_plain_and_streamed(
    services: Services, tenant: Tenant, script: Script, live: LiveServer
) -> None:
    await fund(services, tenant)
    agent = await published_agent(tenant)
    script("We are open 9 to 5.", ["We are ", "open ", "9 to 5."])
    client = openai.AsyncOpenAI(base_url=live.api, api_key=tenant.key, max_retries=0)
    try:
        completion = await client.chat.completions.create(model=agent["id"], messages=MESSAGES, temperature=0.3)
        assert completion.choices[0].message.content == "We are open 9 to 5."
        assert completion.choices[0].finish_reason == "stop" and completion.model == agent["id"]
        stream = await client.chat.completions.create(model=agent["id"], messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "We are open 9 to 5."
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    finally:
        await client.close()


async def test_python_sdk_sync_plain_and_streamed(
    services: Services, tenant: Tenant, script: Script, live: LiveServer
) -> None:
    await fund(services, tenant)
    agent = await published_agent(tenant)
    script("Yes, we deliver.", ["Yes, ", "we ", "deliver."])

    def converse() -> tuple[str | None, str]:  # the sync client blocks: it runs in a thread
        with openai.OpenAI(base_url=live.api, api_key=tenant.key, max_retries=0) as client:
            plain = client.chat.completions.create(model=agent["id"], messages=MESSAGES, user="u-1")
            stream = client.chat.completions.create(model=agent["id"], messages=MESSAGES, stream=True)
            return plain.choices[0].message.content, "".join(c.choices[0].delta.content or "" for c in stream)

    plain, streamed = await asyncio.to_thread(converse)
    assert plain == "Yes, we deliver." and streamed == "Yes, we deliver."


async def test_python_sdk_raises_its_own_error_classes(
    services: Services, tenant: Tenant, script: Script, live: LiveServer
) -> None:
    unpublished = await tenant.create_agent()
    client = openai.AsyncOpenAI(base_url=live.api, api_key=tenant.key)  # default retries: must not retry these
    try:
        with pytest.raises(openai.BadRequestError) as bad_model:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert bad_model.value.status_code == 400
        with pytest.raises(openai.ConflictError) as conflict:
            await client.chat.completions.create(model=unpublished["id"], messages=MESSAGES)
        assert conflict.value.response.headers["content-type"].startswith("application/problem+json")
        assert conflict.value.code == "no_published_version" and "has no published version" in conflict.value.message
        agent = await published_agent(tenant)
        with pytest.raises(openai.APIStatusError) as unpaid:
            await client.chat.completions.create(model=agent["id"], messages=MESSAGES, stream=True)
        assert unpaid.value.status_code == 402
    finally:
        await client.close()
    wrong_key = openai.AsyncOpenAI(base_url=live.api, api_key="flowyte_sk_" + "x" * 40, max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await wrong_key.chat.completions.create(model="agt_x", messages=MESSAGES)
    finally:
        await wrong_key.close()


async def test_npm_openai_package(services: Services, tenant: Tenant, script: Script, live: LiveServer) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed (the npm client test needs Node.js 20+)"
    assert (JS_DIR / "node_modules" / "openai").is_dir(), (
        "the npm client is not installed: run ./dev test (it runs npm ci --prefix tests/js)"
    )
    await fund(services, tenant)
    agent = await published_agent(tenant)
    script("We are open 9 to 5.", ["We are ", "open ", "9 to 5."])
    process = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "completions.mjs"), live.api, tenant.key, agent["id"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result == {
        "plain": "We are open 9 to 5.", "object": "chat.completion", "model": agent["id"],
        "streamed": "We are open 9 to 5.", "finishReason": "stop",
        "error": {"status": 400, "name": "BadRequestError"},
    }
