"""End to end with the REAL bundled model (llama.cpp in-process, no fakes): an agent learns a fact from a
text knowledge source, is published, and answers a question only that source can answer, asked over
/chat/completions with the official openai SDK against a real server."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from control_api.knowledge.service import KnowledgeService
from control_api.llm import local_llm
from control_api.services import Services
from tests import test_chat_support as chat_support
from tests import test_knowledge_support as knowledge_support
from tests.conftest import Tenant
from tests.test_chat_support import LiveServer, fund
from tests.test_knowledge_support import indexed

live = chat_support.live
clock, embedder, knowledge = knowledge_support.clock, knowledge_support.embedder, knowledge_support.knowledge

# Where ./dev assembled the model (the same default as `flowyte serve`).
DATA_DIR = Path(os.environ.get("FLOWYTE_DATA_DIR", Path(__file__).resolve().parent.parent / ".flowyte"))

FACT = (
    "Harbor Lane Bakery's sourdough starter is named Bartholomew. The baker began feeding Bartholomew in 1987, "
    "and every loaf of sourdough we sell is still made with him."
)


@pytest.fixture
def local_model(services: Services) -> None:
    # The project installs llama-cpp-python and joins the model (./dev): a missing one is a failure here.
    services.llm = local_llm(DATA_DIR)


async def test_the_local_model_answers_from_the_agents_knowledge(
    services: Services, tenant: Tenant, knowledge: KnowledgeService, live: LiveServer, local_model: None
) -> None:
    agent = await tenant.create_agent(
        name="Harbor Lane Bakery", persona={"role": "You are the friendly assistant of Harbor Lane Bakery."}
    )
    await indexed(tenant, knowledge, agent["id"], kind="text", label="Our starter", text=FACT)
    assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    await fund(services, tenant)

    client = openai.AsyncOpenAI(base_url=live.api, api_key=tenant.key, max_retries=0, timeout=600)
    try:
        completion = await client.chat.completions.create(
            model=agent["id"], messages=[{"role": "user", "content": "What is the name of your sourdough starter?"}]
        )
    finally:
        await client.close()
    answer = completion.choices[0].message.content or ""
    assert "bartholomew" in answer.lower(), answer
    assert not answer.lstrip().startswith(("{", "[")), f"an answer in words, not a tool result read out: {answer}"

    conversation = (await tenant.get("/conversations", params={"channel": "api"})).json()["data"][0]
    events = (await tenant.get(f"/conversations/{conversation['id']}/receipt")).json()["data"]["events"]
    retrieval = next(e for e in events if e["type"] == "kb_retrieval")
    assert "Bartholomew" in retrieval["passages"][0]["text"]
    assert conversation["outcome"] == "completed" and [e for e in events if e["type"] == "error"] == []
