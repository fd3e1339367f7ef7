"""`flowyte demo`: a fresh data dir becomes a published agent on a number, a running server, and printed
instructions that work - the chat request as printed, and a SIP call to the number."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.peers import PeerMissing, require_binary
from tests.peers.sipp import Sipp
from tests.peers.speech import pad, speech_pcm, write_rtp_pcap
from tests.test_cli import SERVER_START_TIMEOUT_S, Server
from tests.test_cli_sip import sip_address

ROOT = Path(__file__).resolve().parent.parent


def data_dir_with_models(tmp_path: Path) -> Path:
    """A fresh data dir that shares the bundled models ./dev already joined (no second 400 MB copy)."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    for model in (ROOT / ".flowyte" / "models").iterdir():
        (data / "models" / model.name).symlink_to(model)
    return data


def test_demo_sets_up_an_agent_that_answers_chat_and_the_phone(tmp_path: Path) -> None:
    try:
        require_binary("sipp")
    except PeerMissing as exc:
        pytest.fail(str(exc))
    data = data_dir_with_models(tmp_path)
    demo = Server(["--http-port", "0", "--sip-port", "0", "--data-dir", str(data)], command="demo")
    try:
        base_url = demo.wait_listening(SERVER_START_TIMEOUT_S * 4)
        output = "".join(demo.stderr)
        agent_id = re.search(r"Demo agent (agt_\w+) answers (\+\d+)\.", output)
        key = re.search(r"export FLOWYTE_API_KEY=(\S+)", output)
        assert agent_id and key, output
        assert "baresip     then type:  /dial sip:+14155550100@" in output
        auth = {"Authorization": f"Bearer {key[1]}"}
        with httpx.Client(base_url=base_url + "/api/v1", headers=auth, timeout=120) as api:
            agent = api.get(f"/agents/{agent_id[1]}").json()["data"]
            assert agent["publishedVersionId"]
            question = {"role": "user", "content": "When are you open on Saturday?"}
            chat = api.post("/chat/completions", json={"model": agent_id[1], "messages": [question]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["content"].strip()

            speech = pad(speech_pcm("Hello, when are you open?"), 0.0, 0.5)
            pcap = tmp_path / "hello.pcap"
            duration = write_rtp_pcap(pcap, speech, codec="PCMU")
            call = Sipp(
                "uac_speech",
                workdir=tmp_path,
                remote=sip_address(demo),
                service=agent_id[2],
                keys={"pcap": pcap},
                variables={"audio_ms": int(duration * 1000) + 3000},
                timeout=40,
            ).start()
            try:
                result = call.wait(60)
            finally:
                call.close()
            assert result.ok, result.describe()
            calls = api.get("/conversations", params={"channel": "voice"}).json()["data"]
            assert len(calls) == 1 and calls[0]["agentId"] == agent_id[1]
        assert demo.stop(signal.SIGTERM) == 0
    finally:
        demo.kill()
    again = Server(["--http-port", "0", "--sip-port", "0", "--data-dir", str(data)], command="demo")
    try:
        again.wait_listening(SERVER_START_TIMEOUT_S * 4)
        assert f"Demo agent {agent_id[1]} answers" in "".join(again.stderr), "a rerun reuses the demo"
        assert again.stop(signal.SIGTERM) == 0
    finally:
        again.kill()
