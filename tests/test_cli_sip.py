"""`flowyte serve` with its SIP/RTP edge: flags, and a real SIPp call to a number assigned through the API."""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.peers import PeerMissing, require_binary
from tests.peers.sipp import Sipp
from tests.peers.speech import pad, speech_pcm, write_rtp_pcap
from tests.test_cli import SERVER_START_TIMEOUT_S, Server, flowyte
from tests.test_numbers_support import unstocked_number

SIP_LISTENING = re.compile(r"^flowyte: SIP listening on ([\d.]+):(\d+) \(udp\+tcp\), RTP (\d+)-(\d+), media ([^,]+), ")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    args = ["--http-port", "0", "--sip-port", "0", "--rtp-ports", "41000-41199", "--call-mode", "echo"]
    args += ["--data-dir", str(tmp_path / "data")]
    running = Server(args)
    try:
        yield running
    finally:
        running.kill()


def sip_address(server: Server) -> tuple[str, int]:
    for line in server.stderr:
        if match := SIP_LISTENING.match(line.rstrip("\n")):
            return match[1], int(match[2])
    raise AssertionError("no SIP listening line: " + "".join(server.stderr))


def test_serve_answers_sip_calls_to_published_agents_in_echo_mode(server: Server, tmp_path: Path) -> None:
    try:
        require_binary("sipp")
    except PeerMissing as exc:
        pytest.fail(str(exc))
    base_url = server.wait_listening(SERVER_START_TIMEOUT_S)
    sip = sip_address(server)
    assert any(
        "RTP 41000-41199, media 127.0.0.1, calls answered by the echo test mode" in line for line in server.stderr
    )
    key = flowyte("keys", "create", "--org", "acme", "--all-scopes", "--data-dir", str(tmp_path / "data"))
    assert key.returncode == 0, key.stderr
    auth = {"Authorization": f"Bearer {key.stdout.strip()}"}
    e164 = unstocked_number("415")
    with httpx.Client(base_url=base_url + "/api/v1", headers=auth, timeout=10) as http:
        agent = http.post("/agents", json={"name": "Front desk"}).json()["data"]
        imported = http.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})
        assert imported.status_code == 201, imported.text
        unpublished = unstocked_number("415")
        other = http.post("/agents", json={"name": "Not live yet"}).json()["data"]
        assert http.post("/numbers/import", json={"e164": unpublished, "agentId": other["id"]}).status_code == 201
        assert http.post(f"/agents/{agent['id']}/publish").status_code in (200, 201)
        assert http.post("/billing/wallet/topup", json={"amountUsd": 10}).status_code == 201

    speech = pad(speech_pcm("Hello, is this the front desk?"), 0.0, 0.3)
    pcap = tmp_path / "hello.pcap"
    duration = write_rtp_pcap(pcap, speech, codec="PCMU")
    call = Sipp(
        "uac_speech",
        workdir=tmp_path,
        remote=sip,
        service=e164,
        keys={"pcap": pcap},
        variables={"audio_ms": int(duration * 1000) + 500},
        timeout=20,
    ).start()
    try:
        result = call.wait(30)
    finally:
        call.close()
    assert result.ok, result.describe()
    answer = result.received(200)[0].body
    assert re.search(r"m=audio 41\d\d\d RTP/AVP 0 101", answer), answer

    unknown = Sipp("uac_speech", workdir=tmp_path, remote=sip, service=unstocked_number("646"), keys={"pcap": pcap})
    try:
        refused = unknown.start().wait(30)
    finally:
        unknown.close()
    (not_found,) = [m for m in refused.received() if m.status == 404]
    assert not_found.start_line == "SIP/2.0 404 Number Not In Service"
    not_live = Sipp("uac_speech", workdir=tmp_path, remote=sip, service=unpublished, keys={"pcap": pcap})
    try:
        refused = not_live.start().wait(30)
    finally:
        not_live.close()
    assert [m.start_line for m in refused.received() if m.status == 480] == ["SIP/2.0 480 Agent Not Published"]
    with httpx.Client(base_url=base_url + "/api/v1", headers=auth, timeout=10) as http:
        calls = http.get("/conversations", params={"channel": "voice"}).json()["data"]
    assert sorted(c["outcome"] for c in calls) == ["completed", "refused"], calls
    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in "".join(server.stderr)


def test_sip_port_off_runs_the_api_alone(tmp_path: Path) -> None:
    running = Server(["--http-port", "0", "--sip-port", "off", "--data-dir", str(tmp_path / "data")])
    try:
        running.wait_listening(SERVER_START_TIMEOUT_S)
        assert not any("SIP listening" in line for line in running.stderr)
        assert running.stop(signal.SIGTERM) == 0
    finally:
        running.kill()


def test_sip_port_in_use_fails_clearly(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        result = flowyte("serve", "--http-port", "0", "--sip-port", port, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert f"cannot listen for SIP on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--sip-allow", "10.0.0.0/33", "10.0.0.0/33"),
        ("--rtp-ports", "20000", "port range"),
        ("--rtp-ports", "3000-2000", "port range"),
        ("--sip-port", "70000", "out of range"),
    ],
)
def test_bad_sip_flags_are_usage_errors(tmp_path: Path, flag: str, value: str, message: str) -> None:
    result = flowyte("serve", flag, value, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
