"""Phone calls answered by the voice agent end to end: real SIP peers, real speech models (Whisper, Silero,
Piper), the control plane's admission and records. The LLM is scripted where the test is about the call
(the answer is then known); one call runs the bundled LLM on the agent's knowledge, with nothing faked.

baresip calls the agent's number and asks a question (espeak-ng speech); what baresip heard, transcribed
back with the bundled Whisper, holds the greeting and the answer. SIPp keys an order number with RFC 2833
digits and the brain receives it as a keypad entry. Asked for a person, the agent announces the transfer and
REFERs baresip to a SIPp UAS; the NOTIFY's outcome lands in the conversation record.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from numpy.typing import NDArray

from control_api.agent_store import DatabaseAgentSource
from control_api.calls.admission import CallAdmission
from control_api.calls.records import CallRecords
from control_api.calls.voice import SpeechModels, VoiceAgent
from control_api.db.tables import conversation_events, conversations
from control_api.knowledge.service import KnowledgeService
from control_api.numbers.inbound import DatabaseNumberRouter
from control_api.services import Services
from pipeline.llm.types import ToolCall
from pipeline.speech.stt import WhisperSTT
from runtime.voice.call import VoiceSettings
from telephony.edge import EdgeConfig, SipEdge
from tests.conftest import Tenant
from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp, SippResult
from tests.peers.speech import pad, read_wav, rtp_dtmf_pcap, speech_pcm, write_rtp_pcap
from tests.test_chat_local_model import local_model  # noqa: F401 (fixture)
from tests.test_chat_support import Script, fund, published_agent, script  # noqa: F401 (fixture)
from tests.test_knowledge_support import clock, embedder, indexed, knowledge  # noqa: F401 (fixtures)
from tests.test_numbers_support import unstocked_number

HOST = "127.0.0.1"
# Asked "Hello, who makes your bread?": words that espeak-ng says and Whisper tiny.en reads back over a phone
# line ("sourdough starter" comes back as "tower, no starter"). The "Hello," matters: a segment whose onset
# is clipped by a few tens of ms was heard as "to make your bread.", and the model then gives a recipe.
BAKER_FACT = (
    "All of Harbor Lane Bakery's bread is made by our head baker, Bartholomew. He has baked every loaf by "
    "hand since 1987."
)
GREETING = "Thanks for calling Tony's Pizza."
ANSWER = "On Saturdays we open at eleven in the morning."


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SpeechModels:
    loaded = SpeechModels(Path(".flowyte"))
    asyncio.run(loaded.preload())
    return loaded


async def agent_edge(
    services: Services,
    tenant: Tenant,
    models: SpeechModels,
    *,
    transfer_domain: str | None = None,
    data_dir: Path | None = None,
    agent: dict[str, Any] | None = None,
    settings: VoiceSettings | None = None,
    **agent_fields: Any,
) -> tuple[SipEdge, str]:
    """An edge answering with the voice agent; `agent` (already published) or a new one with `agent_fields`."""
    await fund(services, tenant, 1_000)
    agent = agent or await published_agent(tenant, **{"greeting": GREETING, **agent_fields})
    e164 = unstocked_number("305")
    assert (await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})).status_code == 201
    assert services.meter is not None
    admission = CallAdmission(
        DatabaseNumberRouter(services.engine),
        DatabaseAgentSource(services.engine),
        services.meter,
        CallRecords(services.engine, services.clock),
        VoiceAgent(services, models, settings or VoiceSettings(idle_s=30)),
        data_dir=data_dir,
    )
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20), transfer_domain=transfer_domain)
    edge = SipEdge(config, admission)
    await edge.start()
    return edge, e164


async def call_through(edge: SipEdge, uac: Sipp, within: float) -> SippResult:
    """Run SIPp's call to the edge to its end and let the call's session finish (records, metering), then
    close the edge. The result is SIPp's, `ok` asserted."""
    try:
        result = await uac.start().wait_async(within)
        assert result.ok, result.describe()
        async with asyncio.timeout(10):
            await edge.wait_idle()
    finally:
        await edge.close()
    return result


async def caller_says(
    edge: SipEdge, e164: str, sipp: Callable[..., Sipp], pcap: Path, pcm: NDArray[np.int16], *, listen_s: float
) -> SippResult:
    """SIPp calls `e164`, plays `pcm` (8 kHz) as RTP, stays `listen_s` longer, hangs up: `call_through`."""
    duration = write_rtp_pcap(pcap, pcm)
    uac = sipp(
        "uac_speech", remote=(HOST, edge.port), service=e164, caller="+14155550123", keys={"pcap": pcap},
        variables={"audio_ms": int((duration + listen_s) * 1000)}, timeout=int(duration + listen_s) + 30,
    )  # fmt: skip
    return await call_through(edge, uac, duration + listen_s + 40)


async def voice_conversation(services: Services, org_id: str) -> Any:
    async with services.engine.connect() as conn:
        query = sa.select(conversations).where(conversations.c.org_id == org_id, conversations.c.channel == "voice")
        return (await conn.execute(query)).one()


async def recording(services: Services, tenant: Tenant, data_dir: Path) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
    """The call's recording as (caller, agent) 8 kHz channels; the agent's is what left on the wire."""
    conversation = await voice_conversation(services, tenant.org_id)
    assert conversation.recording_path, "the agent records its calls"
    with wave.open(str(data_dir / conversation.recording_path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    return stereo[:, 0].copy(), stereo[:, 1].copy()


def loud_frames(pcm: NDArray[np.int16], threshold: float = 300.0) -> NDArray[np.bool_]:
    """Per 20 ms frame (160 samples at 8 kHz): is there sound in it (RMS above `threshold`)?"""
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return np.asarray(np.sqrt((frames**2).mean(axis=1)) > threshold)


@functools.cache
def tiny_en() -> WhisperSTT:
    """Whisper tiny.en for reading back what was said on a call: loaded once for the module."""
    return WhisperSTT("tiny.en", Path(".flowyte"))


def transcribe_utterances(pcm: NDArray[np.int16], gap_s: float = 0.5) -> str:
    """8 kHz audio with pauses in it (a call recording), transcribed one stretch of sound at a time, lower-cased.
    Whisper given the whole recording at once has dropped all but its first sentence."""
    loud = loud_frames(pcm)
    texts, start, quiet = [], None, 0
    for i, is_loud in enumerate([*loud, *([False] * round(gap_s * 50))]):
        if is_loud:
            start, quiet = (i if start is None else start), 0
        elif start is not None:
            quiet += 1
            if quiet >= gap_s * 50:
                stretch = pcm[max(0, start - 10) * 160 : (i - quiet + 10) * 160]
                texts.append(tiny_en().transcribe(np.repeat(stretch, 2), "en").text)
                start, quiet = None, 0
    return " ".join(texts).lower()


def transcribe_heard(phone: Baresip) -> str:
    """What baresip heard on its calls (its recordings of the audio received), transcribed with the bundled
    Whisper, lower-cased."""
    texts = []
    for heard_file in phone.recordings("dec"):
        heard, rate = read_wav(heard_file)
        assert rate == 8000
        texts.append(transcribe_utterances(heard))
    assert texts, "baresip recorded nothing"
    return " ".join(texts)


async def voice_events(services: Services, org_id: str) -> list[Any]:
    async with services.engine.connect() as conn:
        ids = sa.select(conversations.c.id).where(conversations.c.org_id == org_id, conversations.c.channel == "voice")
        query = sa.select(conversation_events).where(conversation_events.c.conversation_id.in_(ids))
        return list((await conn.execute(query.order_by(conversation_events.c.seq))).all())


async def test_baresip_asks_and_hears_the_greeting_and_the_answer(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    baresip: Callable[..., Baresip],
) -> None:
    llm = script(ANSWER)
    edge, e164 = await agent_edge(services, tenant, models)
    try:
        # The question comes after the greeting (baresip plays its file from the moment the call is up).
        question = pad(speech_pcm("What time do you open on Saturday?"), 4.0, 12.0)
        phone = await baresip(source_pcm=question).start()
        assert (await phone.ctrl.command("dial", f"sip:{e164}@{HOST}:{edge.port}")).ok
        await phone.ctrl.wait_event("CALL_ESTABLISHED", within=10)
        async with asyncio.timeout(25):
            while not llm.calls:  # noqa: ASYNC110 - the scripted LLM has no event; it is asked once
                await asyncio.sleep(0.1)
        await asyncio.sleep(6.0)  # real time: the answer is spoken over the call
        await phone.ctrl.command("hangup")
        await phone.ctrl.wait_event("CALL_CLOSED", within=5)
        await phone.close()
        async with asyncio.timeout(10):
            await edge.wait_idle()
    finally:
        await edge.close()
    assert "saturday" in llm.calls[0].messages[-1].content.lower()
    text = transcribe_heard(phone)
    # Words Whisper reads reliably off Piper's voice ("Tony's Pizza" has come back as "tony spezza").
    assert "calling" in text, text  # the greeting
    assert "saturday" in text and ("eleven" in text or "11" in text), text  # the answer
    events = await voice_events(services, tenant.org_id)
    utterance = next(e for e in events if e.type == "user_utterance")
    timings = utterance.data["timings"]
    assert utterance.data["source"] == "voice" and "speechEndToTranscriptMs" in timings
    assert timings["transcribeMs"] > 0 and isinstance(timings["transcriptSpeculated"], bool), timings
    assert 0 < timings["turnDecidedMs"] <= timings["firstTokenMs"] <= timings["firstAudioMs"], timings
    assert any(e.type == "agent_message" and e.data["text"] == ANSWER for e in events)


async def test_an_order_number_keyed_with_rfc2833_digits_reaches_the_brain(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    llm = script("Order 4711 is out for delivery.")
    edge, e164 = await agent_edge(services, tenant, models)
    pcap = tmp_path / "digits.pcap"
    duration = rtp_dtmf_pcap(pcap, "4711#", payload_type=101)
    uac = sipp(
        "uac_dtmf", remote=(HOST, edge.port), service=e164, keys={"dtmf_pcap": pcap},
        variables={"lead_ms": 500, "dtmf_ms": int(duration * 1000) + 4000}, timeout=30,
    )  # fmt: skip
    await call_through(edge, uac, 40)
    assert llm.calls and "(keypad) 4711" in llm.calls[0].messages[-1].content


async def test_the_agent_transfers_baresip_to_a_sipp_uas_and_records_the_notify(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    baresip: Callable[..., Baresip],
) -> None:
    """Warm transfer: the agent says who it connects the caller to, then REFERs baresip to the destination
    (a phone number, sent to the configured transfer domain: a SIPp UAS); baresip calls it, the NOTIFY 200
    comes back, and the conversation records the handoff, the transfer's outcome and `transferred`."""
    destination = "+14155550199"
    target = sipp("uas_answer", rtp_echo=True, timeout=60).start()
    target.wait_listening()
    transfer = [ToolCall("t1", "transfer_to_human", {"reason": "the caller asked for a person"})]
    # Asked twice when the turn ends at the comma and "please?" continues it (BrainProcessor): then the whole
    # request is answered afresh, as a model would be asked again; the REFER goes out once either way.
    llm = script(transfer, transfer)
    handoff = {"warm": True, "transferDestination": destination, "transferRules": []}
    edge, e164 = await agent_edge(services, tenant, models, transfer_domain=target.uri_host, handoffConfig=handoff)
    try:
        question = pad(speech_pcm("Can I talk to a person, please?"), 4.0, 20.0)
        phone = await baresip(source_pcm=question).start()
        assert (await phone.ctrl.command("dial", f"sip:{e164}@{HOST}:{edge.port}")).ok
        await phone.ctrl.wait_event("CALL_ESTABLISHED", within=10)
        async with asyncio.timeout(40):  # the question, the announcement, the REFER, the NOTIFY, our BYE
            await edge.wait_idle()
        await asyncio.sleep(1.0)  # baresip talks to the UAS now
        await phone.ctrl.command("hangup")
        await phone.close()
        result = await target.wait_async(20)
    finally:
        await edge.close()
    assert llm.calls and "person" in llm.calls[-1].messages[-1].content.lower()
    assert f"dialed={destination}" in result.logs, result.describe()
    events = await voice_events(services, tenant.org_id)
    [requested] = [e for e in events if e.type == "handoff"]
    [transfer] = [e for e in events if e.type == "transfer"]
    assert requested.data["destination"] == destination and requested.data["warm"] is True
    assert transfer.data == {"destination": destination, "ok": True, "sipStatus": 200, "reason": "transferred"}
    assert transfer.seq > requested.seq
    assert (await voice_conversation(services, tenant.org_id)).outcome == "transferred"
    assert "connecting" in transcribe_heard(phone)  # the warm announcement was heard before the REFER


async def test_sipp_asks_what_only_the_knowledge_answers_and_the_local_model_says_it(
    services: Services,
    tenant: Tenant,
    knowledge: KnowledgeService,  # noqa: F811 - the fixture
    local_model: None,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    """No fakes at all: SIPp plays the question, Whisper hears it, the knowledge search finds the passage, the
    bundled LLM answers, Piper speaks. The agent records its calls: its side of the recording, transcribed
    back, names the baker."""
    agent = await tenant.create_agent(
        name="Harbor Lane Bakery", persona={"role": "You are the friendly assistant of Harbor Lane Bakery."},
        greeting="Harbor Lane Bakery, hello.", recordCalls=True,
    )  # fmt: skip
    await indexed(tenant, knowledge, agent["id"], kind="text", label="Our bakers", text=BAKER_FACT)
    assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    edge, e164 = await agent_edge(services, tenant, models, data_dir=tmp_path, agent=agent)
    question = pad(speech_pcm("Hello, who makes your bread?"), 3.0, 0.2)
    await caller_says(edge, e164, sipp, tmp_path / "question.pcap", question, listen_s=25)
    events = await voice_events(services, tenant.org_id)
    heard = next(e.data["text"] for e in events if e.type == "user_utterance")
    answer = next(e.data["text"] for e in events if e.type == "agent_message")
    retrieval = next(e for e in events if e.type == "kb_retrieval")
    assert "Bartholomew" in retrieval.data["passages"][0]["text"], "the caller's question found the passage"
    assert "bartholomew" in answer.lower(), (heard, answer)
    _, agent_side = await recording(services, tenant, tmp_path)
    said = transcribe_utterances(agent_side)
    # Whisper reads Piper's "Bartholomew" its own way ("or follow me"): the rest of the answer is what it hears.
    answer_words = set(re.findall(r"[a-z0-9']+", answer.lower()))
    assert len(answer_words & set(re.findall(r"[a-z0-9']+", said))) >= 0.6 * len(answer_words), (answer, said)
    assert [e for e in events if e.type == "error"] == []


LONG_REPLY = (
    "We have margherita, pepperoni, four cheese, hawaiian, veggie supreme, meat lovers, barbecue chicken, "
    "buffalo chicken, spinach and feta, and a white pizza with ricotta and garlic, and we close at midnight."
)


async def caller_over_the_reply(
    services: Services,
    tenant: Tenant,
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
    interjection: str,
    *,
    at_s: float,
) -> tuple[NDArray[np.int16], NDArray[np.int16], float]:
    """SIPp asks for the menu, then says `interjection` `at_s` seconds into the call, over the long reply.
    Returns the recording's (caller, agent) channels and where the interjection starts (s into the call)."""
    edge, e164 = await agent_edge(services, tenant, models, data_dir=tmp_path, recordCalls=True)
    question = pad(speech_pcm("What pizzas do you have?"), 3.0, 0.0)
    words = speech_pcm(interjection)
    speech = np.concatenate((question, np.zeros(round(at_s * 8000) - len(question), np.int16), words))
    await caller_says(edge, e164, sipp, tmp_path / "caller.pcap", pad(speech, 0.0, 0.2), listen_s=16)
    caller, agent_side = await recording(services, tenant, tmp_path)
    heard = loud_frames(caller)
    onset = next(i for i in range(round((at_s - 0.5) * 50), len(heard)) if heard[i]) / 50
    return caller, agent_side, onset


async def test_the_caller_talks_over_the_agent_and_its_rtp_stops(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    llm = script(LONG_REPLY, "Sure, one large pepperoni.")
    _, agent_side, onset = await caller_over_the_reply(
        services, tenant, models, sipp, tmp_path, "Stop, I want a large pepperoni pizza please.", at_s=9.0
    )
    talking = loud_frames(agent_side)
    start = round(onset * 50)
    assert talking[start - 25 : start].any(), "the agent was talking when the caller started"
    # Our audio stops soon after the caller starts (held at the VAD's speech start, cut once the speech
    # goes on) and stays off while the caller talks; generous bounds: a loaded CI box is slow.
    assert not talking[start + 50 : start + 100].any(), "the agent's RTP stopped within a second"
    assert len(llm.calls) == 2, "the interruption became the next turn"
    heard_reply = [m.content for m in llm.calls[1].messages if m.role == "assistant"][-1]
    assert LONG_REPLY.startswith(heard_reply) and heard_reply != LONG_REPLY, "history keeps only what was heard"


async def test_a_backchannel_over_the_agent_does_not_stop_it(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    llm = script(LONG_REPLY)
    _, agent_side, onset = await caller_over_the_reply(services, tenant, models, sipp, tmp_path, "Okay.", at_s=9.0)
    talking = loud_frames(agent_side)
    start = round(onset * 50)
    assert talking[start - 25 : start].any(), "the agent was talking when the caller said okay"
    assert len(llm.calls) == 1, "a backchannel is not a turn"
    said = transcribe_utterances(agent_side)
    assert "midnight" in said, said  # the reply's last words went out: it was never cut


async def test_an_idle_caller_is_reminded_then_the_agent_says_goodbye_and_hangs_up(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    """The agent's own call control (3 s of silence, one reminder, then `end`), over a SIPp call that says
    nothing and waits for our BYE."""
    llm = script()
    control = {"idleReminderSeconds": 3, "idleReminderCount": 1, "onNoResponseAction": "end", "maxCallSeconds": 120}
    edge, e164 = await agent_edge(services, tenant, models, data_dir=tmp_path, recordCalls=True, callControl=control)
    result = await call_through(edge, sipp("uac_remote_bye", remote=(HOST, edge.port), service=e164, timeout=40), 45)
    assert result.ok and len(result.received("BYE")) == 1, result.describe()
    assert not llm.calls
    conversation = await voice_conversation(services, tenant.org_id)
    assert conversation.outcome == "abandoned"
    _, agent_side = await recording(services, tenant, tmp_path)
    said = transcribe_utterances(agent_side)
    assert "still there" in said and "goodbye" in said, said
    assert 8 <= len(agent_side) / 8000 <= 25, "greeting, 3 s, the reminder, 3 s, the goodbye"


async def test_the_maximum_call_length_ends_the_call(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    """`maxCallSeconds` at its smallest (30 s), reminders out of the way: the agent says the call has reached
    its limit, then hangs up."""
    script()
    control = {"idleReminderSeconds": 300, "idleReminderCount": 0, "maxCallSeconds": 30}
    edge, e164 = await agent_edge(services, tenant, models, data_dir=tmp_path, recordCalls=True, callControl=control)
    result = await call_through(edge, sipp("uac_remote_bye", remote=(HOST, edge.port), service=e164, timeout=50), 55)
    assert result.ok and len(result.received("BYE")) == 1, result.describe()
    _, agent_side = await recording(services, tenant, tmp_path)
    assert 30 <= len(agent_side) / 8000 <= 38, len(agent_side) / 8000
    said = transcribe_utterances(agent_side)
    assert "time limit" in said.lower(), said


async def test_a_spanish_agent_hears_spanish_with_the_multilingual_model(
    services: Services,
    tenant: Tenant,
    script: Script,  # noqa: F811 - the fixture
    models: SpeechModels,
    sipp: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    """An agent whose primary language is Spanish: its calls are transcribed by Whisper base (multilingual,
    joined from its two packages at install), in Spanish. (The bundled Piper voice is English: it reads the
    Spanish greeting and replies with an English accent.)"""
    llm = script("Claro, un momento por favor.")
    edge, e164 = await agent_edge(
        services, tenant, models, primaryLanguage="es", languages=["es"], greeting="Hola, gracias por llamar."
    )
    # A request Whisper base reads back from espeak-ng's Spanish over a phone line ("¿A qué hora abren el
    # sábado?" comes back as "que no hame ni nada").
    question = speech_pcm("Quiero hablar con una persona, por favor.", voice="es")
    await caller_says(edge, e164, sipp, tmp_path / "pregunta.pcap", pad(question, 3.0, 0.2), listen_s=8)
    assert models.stt("es").name == "base"
    assert llm.calls, "the question became a turn"
    heard = llm.calls[0].messages[-1].content.lower()
    assert "hablar con una persona" in heard, heard
