"""SIPp (sip-tester 3.6.1) as a scripted SIP peer.

``Sipp(scenario, workdir=..., remote=..., service=...)`` builds the command line, ``start()`` launches it
in its own session, ``wait()`` returns a ``SippResult`` with SIPp's exit code and its logs, and
``close()`` kills the whole process group. Every run writes, under ``workdir/sipp-<scenario>-<port>/``:

    messages.log  (-trace_msg)   every SIP message sent and received, parsed by ``SippResult.messages``
    errors.log    (-trace_err)   unexpected messages and scenario failures
    actions.log   (-trace_logs)  the scenario's <log> actions (``SippResult.logs``)
    stdout.txt                   SIPp's screen output

Exit codes (``sipp -h``): 0 every call succeeded, 1 at least one failed, 97 internal exit command,
99 normal exit without calls, 255/-1 fatal error, 254/-2 socket bind error. SIPp's own global
``-timeout`` (``timeout`` seconds, with ``-timeout_error``) guards every run, so a scenario that waits for
a message that never comes ends with a failure instead of hanging the test.

Scenario names resolve to ``tests/peers/scenarios/<name>.xml``; keys (``-key name value``) are substituted
as ``[name]`` in messages and in ``<exec play_pcap_audio="[pcap]">``; variables (``-set name value``) must
be declared with ``<Global variables="..."/>`` in the scenario. The runner always passes ``caller``
(From user part, default ``sipp``) and ``rtp_port`` (the SDP port of ``uas_*`` scenarios, default the
media port ``-mp``), so scenarios may rely on both.

Media: SIPp binds the media port and ``port + 2`` on the media IP; ``-rtp_echo`` echoes what arrives
there. ``play_pcap_audio`` sends from a raw socket (root) to the media address found in the peer's SDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from tests.peers import require_binary
from tests.peers.ports import HOST, free_port, free_rtp_port, wait_listening

__all__ = ["SCENARIOS", "SipMessage", "Sipp", "SippError", "SippResult", "scenario_path"]

SCENARIOS = Path(__file__).parent / "scenarios"
Transport = Literal["udp", "tcp"]

_TRANSPORT_FLAG: dict[Transport, str] = {"udp": "u1", "tcp": "t1"}
_LOG_SEPARATOR = re.compile(r"^-{20,} \d{4}-\d\d-\d\d [\d:.]+\s*$", re.MULTILINE)
_LOG_HEADING = re.compile(r"^\s*(UDP|TCP|TLS|SCTP) message (received|sent)\b[^\n]*\n", re.IGNORECASE)


def scenario_path(scenario: str | os.PathLike[str]) -> Path:
    """A scenario name (``uac_speech``) or a path to an XML file."""
    path = Path(scenario)
    if path.suffix != ".xml":
        path = SCENARIOS / f"{scenario}.xml"
    if not path.is_file():
        raise FileNotFoundError(f"SIPp scenario not found: {path}")
    return path


@dataclass(frozen=True)
class SipMessage:
    """One message from SIPp's -trace_msg log."""

    direction: Literal["sent", "received"]
    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        first = self.start_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        first = self.start_line
        return int(first.split()[1]) if first.startswith("SIP/2.0") else None

    def headers(self, name: str) -> list[str]:
        """Values of every header line named ``name`` (case-insensitive; compact forms not expanded)."""
        head = self.text.split("\n\n", 1)[0]
        prefix = name.lower() + ":"
        return [line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith(prefix)]

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) == 2 else ""


def parse_messages_log(text: str) -> list[SipMessage]:
    out: list[SipMessage] = []
    for chunk in _LOG_SEPARATOR.split(text):
        match = _LOG_HEADING.match(chunk)
        if match is None:
            continue
        body = chunk[match.end() :].replace("\r\n", "\n").lstrip("\n").rstrip() + "\n"
        direction: Literal["sent", "received"] = "received" if match.group(2).lower() == "received" else "sent"
        out.append(SipMessage(direction, body))
    return out


@dataclass(frozen=True)
class SippResult:
    returncode: int
    messages_log: str
    errors: str
    logs: str
    stdout: str
    command: list[str] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def messages(self) -> list[SipMessage]:
        return parse_messages_log(self.messages_log)

    def received(self, method_or_status: str | int | None = None) -> list[SipMessage]:
        """Messages SIPp received, optionally only requests of one method or responses of one status."""
        return [m for m in self.messages if m.direction == "received" and _matches(m, method_or_status)]

    def sent(self, method_or_status: str | int | None = None) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "sent" and _matches(m, method_or_status)]

    def describe(self) -> str:
        """Everything useful for a failure message."""
        return (
            f"sipp exited with {self.returncode}\ncommand: {' '.join(self.command)}\n"
            f"--- errors.log\n{self.errors[-4000:]}\n--- actions.log\n{self.logs[-2000:]}\n"
            f"--- messages.log (tail)\n{self.messages_log[-6000:]}\n--- stdout (tail)\n{self.stdout[-2000:]}"
        )


def _matches(message: SipMessage, want: str | int | None) -> bool:
    if want is None:
        return True
    if isinstance(want, int):
        return message.status == want
    return message.method == want.upper()


class SippError(AssertionError):
    """SIPp failed or did not finish in time; the message carries its logs."""

    def __init__(self, message: str, result: SippResult) -> None:
        super().__init__(f"{message}\n{result.describe()}")
        self.result = result


class Sipp:
    """One SIPp process running one scenario.

    ``remote`` is the peer SIPp calls (UAC scenarios: our server); leave it None for UAS scenarios.
    ``service`` is the user part of the Request-URI (``-s``: the dialed number). Ports default to free
    loopback ports picked now, so ``address`` and ``media_port`` are known before ``start()``.
    """

    def __init__(
        self,
        scenario: str | os.PathLike[str],
        *,
        workdir: str | os.PathLike[str],
        remote: tuple[str, int] | None = None,
        service: str | None = None,
        caller: str = "sipp",
        local_ip: str = HOST,
        local_port: int | None = None,
        transport: Transport = "udp",
        media_port: int | None = None,
        rtp_port: int | None = None,
        rtp_echo: bool = False,
        keys: Mapping[str, str | int | os.PathLike[str]] | None = None,
        variables: Mapping[str, str | int | float] | None = None,
        calls: int = 1,
        timeout: float = 20.0,
        auto_answer: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = require_binary("sipp")
        self.scenario = scenario_path(scenario)
        self.remote = remote
        self.service = service
        self.local_ip = local_ip
        self.local_port = local_port or free_port(local_ip)
        self.transport: Transport = transport
        self.media_port = media_port or free_rtp_port(local_ip)
        self.rtp_port = rtp_port or self.media_port
        self.rtp_echo = rtp_echo
        self.keys: dict[str, str] = {"caller": caller, "rtp_port": str(self.rtp_port)}
        self.keys.update({k: os.fspath(v) if isinstance(v, os.PathLike) else str(v) for k, v in (keys or {}).items()})
        self.variables = {k: str(v) for k, v in (variables or {}).items()}
        self.calls = calls
        self.timeout = timeout
        self.auto_answer = auto_answer
        self.extra_args = list(extra_args)
        self.logdir = Path(workdir) / f"sipp-{self.scenario.stem}-{self.local_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._result: SippResult | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where this SIPp listens for SIP."""
        return self.local_ip, self.local_port

    @property
    def uri_host(self) -> str:
        return f"{self.local_ip}:{self.local_port}"

    def command(self) -> list[str]:
        log = self.logdir
        cmd = [self.binary, "-sf", str(self.scenario)]
        if self.remote is not None:
            cmd.append(f"{self.remote[0]}:{self.remote[1]}")
        cmd += ["-i", self.local_ip, "-p", str(self.local_port), "-t", _TRANSPORT_FLAG[self.transport]]
        cmd += ["-mi", self.local_ip, "-mp", str(self.media_port)]
        if self.rtp_echo:
            cmd.append("-rtp_echo")
        if self.service is not None:
            cmd += ["-s", self.service]
        for name, value in self.keys.items():
            cmd += ["-key", name, value]
        for name, value in self.variables.items():
            cmd += ["-set", name, value]
        if self.auto_answer:
            cmd.append("-aa")
        cmd += ["-m", str(self.calls), "-nostdin", "-timeout", f"{self.timeout:g}s", "-timeout_error"]
        cmd += ["-trace_msg", "-message_file", str(log / "messages.log")]
        cmd += ["-trace_err", "-error_file", str(log / "errors.log")]
        cmd += ["-trace_logs", "-log_file", str(log / "actions.log")]
        return cmd + self.extra_args

    def start(self) -> Self:
        if self.process is not None:
            raise RuntimeError("SIPp already started")
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / "stdout.txt", "wb") as stdout:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=self.logdir,
                start_new_session=True,
            )
        return self

    def _read(self, name: str) -> str:
        path = self.logdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def _collect(self, returncode: int) -> SippResult:
        return SippResult(
            returncode=returncode,
            messages_log=self._read("messages.log"),
            errors=self._read("errors.log"),
            logs=self._read("actions.log"),
            stdout=self._read("stdout.txt"),
            command=self.command(),
        )

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (default: its own timeout plus 5 s); on timeout kill it and raise
        ``SippError`` with its logs. A non-zero exit is returned, not raised: see ``expect_success``."""
        if self._result is not None:
            return self._result
        if self.process is None:
            raise RuntimeError("SIPp not started")
        try:
            returncode = self.process.wait(self.timeout + 5 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise SippError(f"sipp {self.scenario.name} did not finish in time", self._collect(-1)) from None
        self._result = self._collect(returncode)
        return self._result

    async def wait_async(self, within: float | None = None) -> SippResult:
        """``wait(within)`` without blocking the event loop (runs in a worker thread)."""
        return await asyncio.to_thread(self.wait, within)

    def expect_success(self, timeout: float | None = None) -> SippResult:
        """``wait`` and raise ``SippError`` unless every call succeeded (exit code 0)."""
        result = self.wait(timeout)
        if not result.ok:
            raise SippError(f"sipp {self.scenario.name} failed", result)
        return result

    async def expect_success_async(self, within: float | None = None) -> SippResult:
        return await asyncio.to_thread(self.expect_success, within)

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Block until SIPp has bound its SIP port (UAS scenarios: call before the peer dials)."""
        try:
            wait_listening(self.local_port, proto=self.transport, timeout=timeout, alive=self._alive)
        except (RuntimeError, TimeoutError) as exc:
            returncode = self.process.poll() if self.process is not None else None
            raise SippError(f"sipp not listening on {self.uri_host}: {exc}", self._collect(returncode or -1)) from None

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Kill SIPp's process group (idempotent)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
