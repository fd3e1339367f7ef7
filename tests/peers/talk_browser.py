"""The browser test's world, run inside a private network namespace whose only interface is `lo`:

    unshare -n python -m tests.peers.talk_browser <workdir> <question.wav>

It brings `lo` up, makes an API key, starts a real `flowyte serve` (SQLite in `workdir`, the bundled models,
no SIP; ICE host candidates on 127.0.0.1 only), creates an agent with a greeting and a knowledge source that
says when it opens, mints a draft
talk token, opens the tester page in Chromium (tests/js/talk.mjs) with the WAV as its microphone, and
prints one JSON object: what the page saw, the conversation's receipt as the API returns it, the time
from the offer to the answer, and the server's log tail. Nothing in the namespace can reach any other
address, so no packet leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from pipeline.llm.model_assets import link_assembled

ROOT = Path(__file__).resolve().parent.parent.parent
PORT = 8080  # a fresh namespace: every port is free
API = f"http://127.0.0.1:{PORT}/api/v1"
HOURS_FACT = "On Saturdays Tony's Pizza opens at eleven in the morning and closes at ten at night."


def flowyte(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "flowyte"), *args]


def main(workdir: Path, wav: Path) -> dict[str, Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    data_dir = workdir / "data"
    link_assembled(ROOT / ".flowyte", data_dir)  # ./dev joined the local LLM there
    env = {**os.environ, "FLOWYTE_DATA_DIR": str(data_dir), "FLOWYTE_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
           "FLOWYTE_DATABASE_URL": ""}  # fmt: skip
    created = subprocess.run(
        flowyte("keys", "create", "--org", "browser-test", "--all-scopes", "--data-dir", str(data_dir)),
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    secret = re.search(r"flowyte_sk_\S+", created.stdout + created.stderr)
    assert secret is not None, created.stdout + created.stderr
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        flowyte("serve", "--data-dir", str(data_dir), "--http-port", str(PORT), "--sip-port", "off"),
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        return drive(workdir, wav, secret.group(0), server)
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def drive(workdir: Path, wav: Path, secret: str, server: subprocess.Popen[bytes]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=API, headers=headers, timeout=60) as api:
        for _ in range(600):  # migrations and the voice stack's imports: up to a minute
            if server.poll() is not None:
                raise RuntimeError("flowyte serve exited early; see server.log")
            try:
                api.get("/agents")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        agent = api.post("/agents", json={
            "name": "Tony's Pizza", "greeting": "Hi, this is Tony's Pizza.",
            "persona": {"role": "You are the friendly assistant of Tony's Pizza."},
        }).json()["data"]  # fmt: skip
        sources = f"/agents/{agent['id']}/knowledge/sources"
        source = api.post(sources, json={"kind": "text", "label": "Opening hours", "text": HOURS_FACT}).json()["data"]
        for _ in range(600):  # the server's knowledge worker indexes it
            if api.get(f"{sources}/{source['id']}").json()["data"]["status"] in ("indexed", "error"):
                break
            time.sleep(0.1)
        token = api.post(f"/agents/{agent['id']}/talk-token", json={"draftMode": True}).json()["data"]
        page = f"http://127.0.0.1:{PORT}/talk#url={token['url']}&token={token['token']}"
        screenshot = workdir / "talk.png"
        node = subprocess.run(
            ["node", str(ROOT / "tests" / "js" / "talk.mjs"), page, str(wav), str(screenshot), "120"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        seen = json.loads(node.stdout.strip().splitlines()[-1]) if node.stdout.strip() else {"error": node.stderr}
        time.sleep(1.0)  # the session ends after the hang-up and writes its record
        listed = api.get("/conversations", params={"channel": "voice"}).json()["data"]
        receipt = api.get(f"/conversations/{listed[0]['id']}/receipt").json()["data"] if listed else None
        replay = api.post(token["url"].removeprefix(API), json={"type": "offer", "sdp": "v=0"},
                          headers={"Authorization": f"Bearer {token['token']}"})  # fmt: skip
        # The same link opened again: the page says in words that it was used.
        again = subprocess.run(
            ["node", str(ROOT / "tests" / "js" / "talk.mjs"), page, str(wav), str(workdir / "used.png"), "20"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        used = json.loads(again.stdout.strip().splitlines()[-1]) if again.stdout.strip() else {"error": again.stderr}
        return {
            "page": seen, "conversations": listed, "receipt": receipt, "screenshot": str(screenshot),
            "replay": {"status": replay.status_code, "body": replay.json()}, "used_page": used,
            "node_stderr": node.stderr[-2000:],
        }  # fmt: skip


if __name__ == "__main__":
    outcome = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(outcome))
