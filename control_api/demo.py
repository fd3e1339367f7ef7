"""`flowyte demo`: on a fresh data dir, a sample agent that answers the phone - then the server.

It creates (once; a rerun on the same data dir reuses everything) an organization `demo` with an API key,
a pizzeria agent with a greeting, knowledge (hours, menu, delivery) and a transfer skill, publishes it,
tops up the wallet, imports +14155550100 and assigns it, and then runs `flowyte serve`. Before the server
starts it prints how to call the agent with a SIP softphone, how to chat with it with curl, and how to talk to
it in a browser.

Everything goes through the public API (an in-process client), so the demo exercises the same validation
an operator's calls would. The key's secret is kept in `<data dir>/demo.json` (mode 0600) so a rerun can
print it again; it is a demo organization on a local data dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import httpx
import uvloop

from control_api.auth.scopes import ALL_SCOPES
from control_api.main import announce, create_api_key, open_engine, run_server
from control_api.services import Services
from control_api.settings import Settings

DEMO_NUMBER = "+14155550100"  # fictional (555-01xx); the API takes only valid E.164 numbers
DEMO_ORG = "demo"
KNOWLEDGE = """Tony's Pizza, 120 Main Street, Boulder, Colorado.
Opening hours: Monday to Friday 11 am to 10 pm; Saturday and Sunday noon to 11 pm.
Menu: margherita 12 dollars, pepperoni 14 dollars, veggie supreme 15 dollars, four cheese 15 dollars.
Every pizza comes in 12 inch or 16 inch; 16 inch adds 4 dollars. Gluten-free crust is available for 3 dollars.
Delivery: free within 5 miles of the shop for orders over 20 dollars, otherwise a 4 dollar fee; about 40 minutes.
"""
AGENT = {
    "name": "Tony's Pizza",
    "greeting": "Thanks for calling Tony's Pizza! How can I help you today?",
    "persona": {
        "role": "Friendly phone host for a neighborhood pizzeria.",
        "goals": ["Answer questions about hours, menu and delivery", "Transfer to the kitchen when asked"],
        "neverDo": ["Promise discounts"],
    },
}
TRANSFER_SKILL = {
    "name": "Transfer to the kitchen",
    "description": "Transfer the caller to the kitchen when they want to speak to a person or place a large order.",
    "skillType": "transfer",
    "executionConfig": {"destination": "sip:kitchen@127.0.0.1:5070"},
}


@dataclass(frozen=True)
class DemoState:
    key: str
    agent_id: str
    number: str = DEMO_NUMBER


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"demo setup: {response.request.method} {response.request.url.path}: {response.text}")
    data: dict[str, Any] = response.json().get("data", {})
    return data


async def prepare(settings: Settings) -> DemoState:
    """Create the demo organization, agent and number (once per data dir)."""
    state_file = settings.data_dir / "demo.json"
    if state_file.exists():
        saved = json.loads(state_file.read_text())
        return DemoState(saved["key"], saved["agentId"], saved.get("number", DEMO_NUMBER))
    _, secret = await create_api_key(settings, org_name=DEMO_ORG, scopes=ALL_SCOPES, label="flowyte demo")
    engine = await open_engine(settings)
    services = Services(settings=settings, engine=engine)
    from control_api.http.app import create_app  # the HTTP stack only when needed

    stop = asyncio.Event()
    assert services.knowledge is not None
    ingestion = asyncio.create_task(services.knowledge.run(stop))  # embeds the knowledge source below
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://demo/api/v1", headers=headers) as api:
            agent = _check(await api.post("/agents", json=AGENT))
            _check(
                await api.post(
                    f"/agents/{agent['id']}/knowledge/sources",
                    json={"kind": "text", "label": "Hours, menu and delivery", "text": KNOWLEDGE},
                )
            )
            await services.knowledge.worker.drain()  # embedded before publishing, so the version has it
            _check(await api.post(f"/agents/{agent['id']}/skills", json=TRANSFER_SKILL))
            _check(await api.post(f"/agents/{agent['id']}/publish", json={"note": "demo"}))
            _check(await api.post("/billing/wallet/topup", json={"amountUsd": 50}))
            _check(await api.post("/numbers/import", json={"e164": DEMO_NUMBER, "agentId": agent["id"]}))
    finally:
        stop.set()
        await ingestion
        await engine.dispose()
    state = DemoState(secret, str(agent["id"]))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"key": state.key, "agentId": state.agent_id, "number": state.number}, out)
    return state


def instructions(settings: Settings, state: DemoState) -> str:
    host = settings.media_address or settings.host
    sip = f"sip:{state.number}@{host}:{settings.sip_port}"
    api = f"http://{settings.host}:{settings.http_port}/api/v1"
    return "\n".join(
        [
            "",
            f"Demo agent {state.agent_id} answers {state.number}.",
            "",
            "Call it with a SIP softphone on this machine:",
            f"  baresip     then type:  /dial {sip}",
            f"  linphonec   then type:  call {sip}",
            "",
            "Chat with it:",
            f"  export FLOWYTE_API_KEY={state.key}",
            f"  curl -s {api}/chat/completions -H \"Authorization: Bearer $FLOWYTE_API_KEY\" \\",
            f"    -H 'Content-Type: application/json' -d '{{\"model\": \"{state.agent_id}\", "
            f"\"messages\": [{{\"role\": \"user\", \"content\": \"When are you open on Saturday?\"}}]}}'",
            "",
            "Talk to it in a browser on this machine (a talk link lasts 5 minutes and opens one session):",
            f"  curl -s -X POST {api}/agents/{state.agent_id}/talk-token -H \"Authorization: Bearer $FLOWYTE_API_KEY\"",
            f"  then open  http://{settings.host}:{settings.http_port}/talk#url=<url>&token=<token>",
            "",
        ]
    )


async def run_demo(settings: Settings) -> None:
    settings = settings.resolved()
    state = await prepare(settings)
    announce("demo ready")
    print(instructions(settings, state), file=sys.stderr, flush=True)
    await run_server(settings)


def demo(settings: Settings) -> None:
    """`flowyte demo`, on uvloop like `flowyte serve`."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_demo(settings))
