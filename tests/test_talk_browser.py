"""The in-browser voice tester in a real browser: Debian's Chromium (playwright-core), its fake microphone
playing an espeak-ng question, against a real `flowyte serve` with the bundled models, all inside a private
network namespace whose only interface is `lo` (tests/peers/talk_browser.py), so ICE stays on 127.0.0.1
and nothing leaves the machine. The page connects, the server transcribes the question, the agent answers
from its knowledge, and the page hears the answer. The mid-call screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from tests.peers.speech import pad, speech_pcm

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def question_wav(path: Path) -> Path:
    """The caller: 3 s of silence (the greeting plays), the question, 1 s of silence; 48 kHz mono."""
    pcm = pad(speech_pcm("What time do you open on Saturday?", 16000), 3.0, 1.0, 16000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(np.asarray(soxr.resample(pcm, 16000, 48000), dtype=np.int16).tobytes())
    return path


def in_private_network(tmp_path: Path) -> dict[str, Any]:
    for tool in ("unshare", "chromium", "node", "ip"):
        assert shutil.which(tool), f"{tool} is missing: ./dev installs it"
    assert os.geteuid() == 0, "unshare -n needs root (CI and ./dev run as root here)"
    run = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.peers.talk_browser", str(tmp_path),
         str(question_wav(tmp_path / "question.wav"))],
        capture_output=True, text=True, timeout=420, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    log = tmp_path / "server.log"
    assert run.returncode == 0, (run.stderr[-3000:], log.read_text()[-3000:] if log.exists() else "")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_a_browser_talks_to_the_draft_and_hears_the_answer(tmp_path: Path) -> None:
    result = in_private_network(tmp_path)
    page = result["page"]
    assert page.get("error") is None, page
    events = {e["type"]: e.get("data") or {} for e in page["events"]}
    assert "saturday" in events["user_utterance"]["text"].lower(), "the server transcribed the question"
    assert events["kb_retrieval"]["passages"][0]["used"], "the agent found its knowledge"
    answer = events["agent_message"]["text"]
    assert "11" in answer or "eleven" in answer.lower(), answer
    assert len(page["speakingStarts"]) >= 2 and page["peak"] > 0.02, "greeting, then the answer, heard"
    assert page["connectedMs"] < 10_000
    [conversation] = result["conversations"]
    assert conversation["draft"] is True and conversation["channel"] == "voice"
    assert result["replay"]["status"] == 409 and result["replay"]["body"]["code"] == "talk_token_used"
    used = result["used_page"]
    assert used["state"] == "error" and "already been used" in used["error"], used
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(result["screenshot"], ARTIFACTS / "talk-mid-call.png")
    print(f"\nconnected {page['connectedMs']:.0f} ms after Start; answer: {answer!r}")
