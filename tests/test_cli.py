"""The `flowyte` command, run for real as a subprocess: key management and `serve`.

Key commands run against every backend (the `database_url` fixture); `serve` runs on its embedded SQLite
default in a temporary data directory, on a port the kernel picks (`--http-port 0`). The test learns the
address from the one line the server prints once it is listening, so nothing sleeps or polls.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY_PATTERN = re.compile(r"^flowyte_sk_[A-Za-z0-9]{40}$")
LISTENING = re.compile(r"^flowyte: API listening on (http://\S+)$")
COMMAND_TIMEOUT_S = 60
SERVER_START_TIMEOUT_S = 30
SERVER_STOP_TIMEOUT_S = 20


def clean_env() -> dict[str, str]:
    """The caller's environment minus FLOWYTE_* settings, so only the flags under test apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOWYTE_")}


def flowyte_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "control_api.cli", *args]


def flowyte(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flowyte_command(*args),
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@dataclass
class Storage:
    """The storage flags every key command takes: one database, one data directory."""

    database_url: str
    data_dir: Path

    def flags(self) -> tuple[str, ...]:
        return ("--database-url", self.database_url, "--data-dir", str(self.data_dir))

    def create_key(self, org: str, *scope_flags: str) -> str:
        result = flowyte("keys", "create", "--org", org, *scope_flags, *self.flags())
        assert result.returncode == 0, result.stderr
        return result.stdout

    def list_json(self) -> list[dict[str, Any]]:
        result = flowyte("keys", "list", "--json", *self.flags())
        assert result.returncode == 0, result.stderr
        keys: list[dict[str, Any]] = json.loads(result.stdout)
        return keys


@pytest.fixture
def storage(database_url: str, tmp_path: Path) -> Storage:
    return Storage(database_url, tmp_path / "data")


def unique_org() -> str:
    return f"cli-{secrets.token_hex(6)}"


# -- help and usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"]],
    ids=lambda c: " ".join(c) or "flowyte",
)
def test_every_command_has_help(command: list[str]) -> None:
    result = flowyte(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flowyte")
    assert result.stderr == ""


@pytest.mark.parametrize(
    "command",
    [[], ["keys"], ["bogus"], ["keys", "create"], ["keys", "revoke"], ["serve", "--http-port", "70000"]],
    ids=lambda c: " ".join(c) or "flowyte",
)
def test_bad_usage_exits_2_with_message_on_stderr(command: list[str]) -> None:
    result = flowyte(*command)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error:" in result.stderr


# -- keys --------------------------------------------------------------------------------------------------


def test_key_lifecycle(storage: Storage) -> None:
    org = unique_org()
    result = flowyte(
        "keys",
        "create",
        "--org",
        org,
        "--scopes",
        "agents:read agents:write",
        "--label",
        "ci",
        *storage.flags(),
    )
    assert result.returncode == 0, result.stderr
    secret = result.stdout.removesuffix("\n")
    assert KEY_PATTERN.match(secret), result.stdout
    assert secret not in result.stderr

    [listed] = [k for k in storage.list_json() if k["org"] == org]
    assert secret.startswith(listed["prefix"]) and len(listed["prefix"]) < len(secret)
    assert listed["label"] == "ci"
    assert listed["scopes"] == ["agents:read", "agents:write"]
    assert listed["revokedAt"] is None
    assert listed["id"] in result.stderr

    table = flowyte("keys", "list", *storage.flags())
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[:7] == ["ID", "ORG", "LABEL", "PREFIX", "SCOPES", "CREATED", "REVOKED"]
    row = next(line for line in table.stdout.splitlines() if line.startswith(listed["id"]))
    assert org in row and listed["prefix"] in row
    assert secret not in table.stdout

    revoked = flowyte("keys", "revoke", listed["id"], *storage.flags())
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == ""
    [after] = [k for k in storage.list_json() if k["id"] == listed["id"]]
    assert after["revokedAt"] is not None

    again = flowyte("keys", "revoke", listed["id"], *storage.flags())
    assert again.returncode == 0, again.stderr


def test_all_scopes_and_existing_organization(storage: Storage) -> None:
    org = unique_org()
    first = storage.create_key(org, "--all-scopes")
    second = storage.create_key(org, "--scopes", "agents:read")
    assert first != second
    keys = [k for k in storage.list_json() if k["org"] == org]
    assert len(keys) == 2
    assert len({k["orgId"] for k in keys}) == 1
    assert "keys:write" in keys[0]["scopes"]


def test_revoke_unknown_key_exits_1(storage: Storage) -> None:
    result = flowyte("keys", "revoke", "key_doesnotexist", *storage.flags())
    assert result.returncode == 1
    assert result.stdout == ""
    assert "key_doesnotexist" in result.stderr


def test_unknown_scope_is_refused_before_anything_is_created(storage: Storage) -> None:
    org = unique_org()
    result = flowyte("keys", "create", "--org", org, "--scopes", "agents:read bogus:scope", *storage.flags())
    assert result.returncode == 2
    assert result.stdout == ""
    assert "bogus:scope" in result.stderr
    assert not [k for k in storage.list_json() if k["org"] == org]


@pytest.mark.parametrize(
    "scope_flags", [[], ["--all-scopes", "--scopes", "agents:read"]], ids=["none", "both"]
)
def test_exactly_one_of_scopes_and_all_scopes(storage: Storage, scope_flags: list[str]) -> None:
    result = flowyte("keys", "create", "--org", unique_org(), *scope_flags, *storage.flags())
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--scopes" in result.stderr and "--all-scopes" in result.stderr


def test_unreachable_database_exits_1(tmp_path: Path) -> None:
    result = flowyte("keys", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("flowyte: error:")
    assert "Traceback" not in result.stderr


# -- serve -------------------------------------------------------------------------------------------------


class Server:
    """`flowyte serve` in a child process; its stderr is read line by line on a thread."""

    def __init__(self, args: Sequence[str], command: str = "serve") -> None:
        self.process = subprocess.Popen(
            flowyte_command(command, *args),
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_listening(self, timeout: float) -> str:
        """The API's base URL, from the line the server prints once its socket is listening."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"server did not start: {''.join(self.stderr)}") from None
            if line is None:
                raise AssertionError(f"server exited {self.process.wait()}: {''.join(self.stderr)}")
            if match := LISTENING.match(line):
                return match.group(1)

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        self._reader.join(timeout=SERVER_STOP_TIMEOUT_S)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Server]:
    server = Server(["--http-port", "0", "--sip-port", "0", "--data-dir", str(tmp_path / "data")])
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_serve_answers_the_api_and_stops_cleanly(
    serve: Server, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    base_url = serve.wait_listening(SERVER_START_TIMEOUT_S)
    assert base_url.startswith("http://127.0.0.1:")

    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200

        key = flowyte("keys", "create", "--org", "acme", "--all-scopes", "--data-dir", str(tmp_path / "data"))
        assert key.returncode == 0, key.stderr
        auth = {"Authorization": f"Bearer {key.stdout.strip()}"}

        openapi = http.get("/api/v1/openapi.json")
        assert openapi.status_code == 200
        assert "/api/v1/agents" in openapi.json()["paths"]

        created = http.post("/api/v1/agents", json={"name": "Acme Support"}, headers=auth)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["success"] is True
        assert body["data"]["id"]
        assert body["data"]["name"] == "Acme Support"

    assert serve.stop(stop_signal) == 0
    output = "".join(serve.stderr)
    assert "Traceback" not in output, output
    assert [line for line in serve.stderr if line.startswith("flowyte: API listening")] == [
        f"flowyte: API listening on {base_url}\n"
    ]


def test_serve_refuses_a_port_in_use(serve: Server, tmp_path: Path) -> None:
    port = serve.wait_listening(SERVER_START_TIMEOUT_S).rsplit(":", 1)[1]
    result = flowyte("serve", "--http-port", port, "--sip-port", "0", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
