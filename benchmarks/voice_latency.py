"""Voice-to-voice latency, barge-in, runtime overhead and memory of the voice agent, over loopback.

The server (benchmarks/voice_server.py) runs in its own process, so its RSS is its own: the SIP edge with
`VoiceAgent` on a fresh SQLite database, the full local stack (Silero VAD, Whisper tiny.en, Qwen2.5 0.5B
on llama.cpp, Piper). The caller (benchmarks/voice_caller.py) is a scripted UDP phone in this process: it
sends espeak-ng questions (tests/peers/speech.py `speech_pcm`, trimmed to whole 20 ms frames of speech) as
paced μ-law RTP, silence between them, and timestamps every agent RTP packet on arrival (perf_counter).

1. Voice-to-voice latency per turn: the last RTP packet of the caller's speech leaving -> the first agent
   packet with sound (peak above ~-42 dBFS) arriving. Several calls, a few questions each, after one
   warm-up call that is not counted. Per turn, the receipt the server wrote (user_utterance.data.timings
   in conversation_events, read from SQLite after the run) splits it, each since the VAD's pause:
   speechEndToTranscriptMs (transcript ready), turnDecidedMs (the turn ended, the brain asked),
   firstTokenMs (the first LLM token), firstAudioMs (the first agent audio into the leg).
   The same for turns answered from the agent's knowledge (``--knowledge-calls``): the server's
   ``knowledge`` agent has the `flowyte demo` pizzeria's hours, menu and delivery, and each question is one
   those answer; the report counts the replies that hold the fact asked for (words from the agent_message
   events, e.g. "14" or "fourteen" for the pepperoni's price).
2. Barge-in: the agent reads a long greeting; 1.5-3 s into it the caller asks a question. Onset = the
   first RTP packet of that speech leaving; stop = the last agent packet before the first gap of more
   than 100 ms in its audio, + 20 ms (that packet's play time). One barge-in per call.
3. Runtime overhead: a second server with instant fakes (`--fake`: ScriptedSTTService delay 0,
   ScriptedLLM ttft 0, ScriptedTTSService ttfb 0), the same measurement as 1, minus the configured waits
   VoiceSettings.vad_stop_s + turn_timeout_s (the fake server has no turn model, so its turns end after that
   fixed silence; the real one uses Smart Turn). What remains is everything else: jitter
   buffer and resampling of the caller's audio, Silero's 32 ms analysis windows, frame hops through
   pipecat, the output transport and the 20 ms RTP pacer.
4. Memory: the real server's VmRSS before any call, after the warm-up with no call up, with 1, 2, 4 calls
   up at once (each greeted and answered once), and after each of back-to-back calls for ``--soak``
   seconds; the least-squares slope of RSS over cumulative call time, in MB per call-hour. Beside each
   soak sample the server reports what holds its memory (SIGUSR1, voice_server.memory_report): the LLM
   engine's saved KV states, bounded by its config, so RSS less them tells a cache filling from a leak;
   glibc's heap in use and free (mallinfo2), telling a leak from fragmentation; SQLite's memory; Python's
   allocated blocks. ``--fake-soak`` does the same on the fake server (no models: the runtime's own memory),
   and with ``--trace-python`` both servers trace their Python allocations and report what grew, by line
   (tracing slows them: a run for finding a leak, not for latency figures).

Prints the figures, writes benchmarks/results/voice_latency.json and voice_latency.png. Timings are
reported, never asserted.

    nice -n 5 .venv/bin/python benchmarks/voice_latency.py [--quick] [--calls 5] [--questions 4]
        [--knowledge-calls 5] [--barge-ins 10] [--soak 240] [--levels 1,2,4] [--only real|fake]
        [--fake-soak 0] [--trace-python]

With ``--only`` one server runs (the report has its sections only, the JSON is voice_latency-<which>.json,
and there is no plot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from voice_caller import Arrival, Caller, trim  # the benchmarks folder, on the path above
from voice_report import MB, RECEIPT_TIMINGS, evaluated, plot, report

from runtime.voice.call import VoiceSettings
from tests.peers.speech import speech_pcm

RESULTS = Path(__file__).parent / "results"
SERVER = Path(__file__).parent / "voice_server.py"
QUESTIONS = (
    "What time do you open on Saturday?",
    "Do you deliver to the airport?",
    "How much is a large pepperoni pizza?",
    "Do you have any vegan options?",
    "Can I pick up my order in twenty minutes?",
    "Is there parking near the restaurant?",
    "Do you sell gluten free crust?",
    "What is your phone number?",
)
# Questions the knowledge (control_api/demo.py KNOWLEDGE) answers, each with words one of which a right reply holds.
KNOWLEDGE_QUESTIONS = {
    "When are you open on Saturday?": ("noon", "12", "twelve"),
    "How much is a pepperoni pizza?": ("14", "fourteen"),
    "Do you have a gluten free crust?": ("gluten",),
    "How much does delivery cost?": ("free", "4", "four"),
    "Where is the restaurant?": ("main", "120", "boulder"),
    "What sizes do your pizzas come in?": ("12", "16", "twelve", "sixteen"),
    "How long does delivery take?": ("40", "forty"),
    "How much is the four cheese pizza?": ("15", "fifteen"),
}
KNOWLEDGE_QUESTIONS_LIST = tuple(KNOWLEDGE_QUESTIONS)
BARGE_IN = "Sorry, can I just order a pizza?"
VAD_STOP_S, TURN_TIMEOUT_S = VoiceSettings.vad_stop_s, VoiceSettings.turn_timeout_s  # both servers' defaults
ANSWER_GAP_S = 1.0  # the agent is done when no packet has come for this long


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) if samples else float("nan")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A resident-memory line of /proc/<pid>/status in MB: VmRSS, or its parts RssAnon (the heap and other
    private memory) and RssFile (mapped files: the models' pages that have been read)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stats(samples: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "min": min(samples, default=float("nan")),
        "max": max(samples, default=float("nan")),
    }


# --- the server process -------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    numbers: dict[str, str]
    database: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> float:
        return rss_mb(self.pid)

    async def holdings(self) -> dict[str, Any]:
        """The server's own account of what holds memory (voice_server.memory_report), asked for by SIGUSR1."""
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 10.0)
        report: dict[str, Any] = json.loads(line)
        return {**report, "rss_anon_mb": rss_mb(self.pid, "RssAnon"), "rss_file_mb": rss_mb(self.pid, "RssFile")}


def spawn(command: list[str], log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as err:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)


@asynccontextmanager
async def voice_server(workdir: Path, name: str, *, fake: bool, trace: bool = False) -> AsyncIterator[Server]:
    """A fresh voice_server.py on its own database under ``workdir/name``; stopped with SIGTERM."""
    data = workdir / name
    log = workdir / f"{name}-server.log"
    command = [sys.executable, str(SERVER), "--data-dir", str(data)] + (["--fake"] if fake else [])
    command += ["--trace-python"] if trace else []
    process = spawn(command, log)
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)  # one JSON line once it listens
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"voice server did not start: {log.read_text()[-3000:]}") from None
        yield Server(process, int(ready["sip_port"]), dict(ready["numbers"]), Path(ready["database"]), log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- caller scripts -----------------------------------------------------------------------------------


class Speech:
    """espeak-ng questions as 8 kHz PCM, trimmed to the speech, made once."""

    def __init__(self) -> None:
        self._cache: dict[str, NDArray[np.int16]] = {}

    def __call__(self, text: str) -> NDArray[np.int16]:
        if text not in self._cache:
            self._cache[text] = trim(speech_pcm(text))
        return self._cache[text]


@dataclass
class Turn:
    caller_id: str
    index: int  # 0-based question number within the call
    question: str
    speech_end: float  # perf_counter: the last speech packet left
    first_packet_ms: float | None  # -> the first agent packet (with or without sound)
    v2v_ms: float | None  # -> the first agent packet with sound
    answer_s: float  # how long the agent spoke


class Calls:
    """Places calls to one server and runs the caller's scripts on them."""

    def __init__(self, server: Server, speech: Speech, tag: str) -> None:
        self.server, self.speech, self.tag = server, speech, tag
        self.count = 0

    async def dial(self, agent: str) -> Caller:
        self.count += 1
        caller = Caller(self.server.port, self.server.numbers[agent], f"+1{self.tag}{self.count:07d}")
        await caller.dial()
        return caller

    async def greeting(self, caller: Caller, within: float = 30.0) -> None:
        """Until the greeting has been played out."""
        if await caller.agent_sound(0.0, within) is None:
            raise RuntimeError("no greeting")
        await caller.agent_quiet(ANSWER_GAP_S, within)

    async def ask(self, caller: Caller, index: int, question: str, answer_within: float = 60.0) -> Turn:
        spoken = await caller.speak(self.speech(question))
        sound = await caller.agent_sound(spoken.last, answer_within)
        first = next((a.at for a in caller.arrivals if a.at > spoken.last), None)
        last = await caller.agent_quiet(ANSWER_GAP_S, answer_within) if sound is not None else None
        return Turn(
            caller.caller_id, index, question, spoken.last,
            None if first is None else 1000 * (first - spoken.last),
            None if sound is None else 1000 * (sound - spoken.last),
            0.0 if sound is None or last is None else last - sound,
        )  # fmt: skip

    async def conversation(self, questions: Sequence[str], pause_s: float = 0.5, agent: str = "latency") -> list[Turn]:
        """One call: the greeting, then each question after the previous answer; hang up."""
        caller = await self.dial(agent)
        turns = []
        try:
            await self.greeting(caller)
            for i, question in enumerate(questions):
                await asyncio.sleep(pause_s)  # the caller's own pause before answering back
                turns.append(await self.ask(caller, i, question))
        finally:
            await caller.hangup()
        return turns


def barge_in_stop(arrivals: Sequence[Arrival], onset: float, until: float, gap: float = 0.1) -> float | None:
    """When the agent's audio stopped after ``onset``: the last packet before the first gap longer than
    ``gap`` (+ 20 ms, its play time), looking up to ``until``. None when the agent was not speaking at the
    onset or had not stopped by then."""
    before = [a for a in arrivals if a.at <= onset]
    if not before or onset - before[-1].at > gap:
        return None  # the agent was not speaking when the caller started
    prev = before[-1].at
    for arrival in arrivals[len(before) :]:
        if arrival.at - prev > gap:
            return prev + 0.020
        prev = arrival.at
    return prev + 0.020 if until - prev > gap else None


async def barge_in(calls: Calls, rng: random.Random) -> dict[str, Any]:
    """One call: 1.5-3 s into the long greeting the caller talks; how long until the agent's audio stops."""
    caller = await calls.dial("bargein")
    try:
        started = await caller.agent_sound(0.0, 30.0)
        if started is None:
            raise RuntimeError("no greeting")
        await asyncio.sleep(max(0.0, started + rng.uniform(1.5, 3.0) - time.perf_counter()))
        spoken = await caller.speak(calls.speech(BARGE_IN))
        await asyncio.sleep(0.5)
        stop = barge_in_stop(caller.arrivals, spoken.first, time.perf_counter())
    finally:
        await caller.hangup()
    return {"into_greeting_s": spoken.first - started, "ms": None if stop is None else 1000 * (stop - spoken.first)}


# --- phases ---------------------------------------------------------------------------------------------


async def latency_turns(
    calls: Calls, n_calls: int, n_questions: int, rng: random.Random, *, agent: str = "latency",
    asked: Sequence[str] = QUESTIONS,
) -> list[Turn]:  # fmt: skip
    turns: list[Turn] = []
    for c in range(n_calls):
        questions = rng.sample(list(asked), n_questions)
        got = await calls.conversation(questions, agent=agent)
        turns += got
        done = [f"{t.v2v_ms:.0f}" if t.v2v_ms is not None else "-" for t in got]
        print(f"    call {c + 1}/{n_calls}: v2v ms {', '.join(done)}", flush=True)
    return turns


async def concurrency(calls: Calls, server: Server, levels: Sequence[int], rng: random.Random) -> list[dict[str, Any]]:
    """RSS with N calls up at once, each greeted and answered once before the sample."""
    out = []
    for n in levels:
        callers = [await calls.dial("latency") for _ in range(n)]
        try:
            await asyncio.gather(*(calls.greeting(c, within=90.0) for c in callers))
            turns = await asyncio.gather(
                *(calls.ask(c, 0, rng.choice(QUESTIONS), answer_within=120.0) for c in callers)
            )
            rss = server.rss()
        finally:
            await asyncio.gather(*(c.hangup() for c in callers), return_exceptions=True)
        answered = [t.v2v_ms for t in turns if t.v2v_ms is not None]
        out.append({"calls": n, "rss_mb": rss, "v2v_ms_max": max(answered, default=float("nan"))})
        print(f"    {n} concurrent: RSS {rss:.1f} MB", flush=True)
    return out


async def soak(calls: Calls, server: Server, seconds: float, rng: random.Random) -> dict[str, Any]:
    """Back-to-back calls (greeting, one question, answer, hang-up) for ``seconds``; RSS after each."""
    samples: list[tuple[float, float]] = []  # (cumulative call seconds, RSS MB with no call up)
    holdings: list[dict[str, Any]] = []  # beside each sample: what the server says holds its memory
    call_s = 0.0
    end = time.monotonic() + seconds
    turns: list[Turn] = []
    while time.monotonic() < end:
        started = time.monotonic()
        turns += await calls.conversation([rng.choice(QUESTIONS)], pause_s=0.2)
        call_s += time.monotonic() - started
        await asyncio.sleep(0.3)  # the hang-up reaches the server and the call's tasks end
        samples.append((call_s, server.rss()))
        holdings.append(await server.holdings())
    warm = samples[min(2, len(samples) - 1) :]  # allocator arenas and caches settle over the first calls
    later = samples[len(samples) // 2 :]  # what is left once every cache has had half the run to fill
    half = len(samples) // 2
    # RSS less the LLM's saved KV states: those are bounded by the engine's config (cache_bytes), so RSS that
    # grows only with them is a cache filling, not a leak.
    without_cache = [(t, rss - h["llm_saved_bytes"] / MB) for (t, rss), h in zip(samples, holdings, strict=True)]
    heap = [(t, h["heap"]["in_use"] / MB) for (t, _), h in zip(samples, holdings, strict=True) if h["heap"]]
    return {
        "seconds": seconds,
        "calls": len(samples),
        "call_hours": call_s / 3600,
        "rss_first_mb": samples[0][1] if samples else float("nan"),
        "rss_last_mb": samples[-1][1] if samples else float("nan"),
        "mb_per_call_hour": mb_per_call_hour(samples),
        "mb_per_call_hour_after_2_calls": mb_per_call_hour(warm),
        "mb_per_call_hour_second_half": mb_per_call_hour(later),
        "llm_saved_mb_first_last": [h["llm_saved_bytes"] / MB for h in (holdings[0], holdings[-1])] if holdings else [],
        "mb_per_call_hour_second_half_without_llm_cache": mb_per_call_hour(without_cache[half:]),
        "heap_in_use_mb_per_call_hour_second_half": mb_per_call_hour(heap[half:]),
        "mb_per_call_hour_second_half_medians": mb_per_call_hour_medians(later),
        "samples": samples,
        "holdings": holdings,
        "v2v_ms": [t.v2v_ms for t in turns],
    }


def mb_per_call_hour_medians(samples: Sequence[tuple[float, float]]) -> float:
    """RSS growth (MB per call-hour) from the median of the first quarter of `samples` to that of the last.
    RSS after a call takes one of two levels ~20 MB apart (whether malloc_trim ran before or after the last
    of the call's frees), and a least-squares line through such noise over a quarter of a call-hour moves by
    tens of MB/call-hour; the medians of two windows stay on the usual level."""
    quarter = len(samples) // 4
    if quarter < 3:
        return float("nan")
    first, last = samples[:quarter], samples[-quarter:]
    hours = (float(np.median([t for t, _ in last])) - float(np.median([t for t, _ in first]))) / 3600
    return (float(np.median([r for _, r in last])) - float(np.median([r for _, r in first]))) / hours


def mb_per_call_hour(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) over cumulative call-hours."""
    if len(samples) < 3:
        return float("nan")
    return float(np.polyfit([s[0] / 3600 for s in samples], [s[1] for s in samples], 1)[0])


def receipts(database: Path) -> dict[str, list[dict[str, Any]]]:
    """Per caller id (the conversation's end_user), the data of each user_utterance, in order."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT c.end_user, e.data FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id "
            "WHERE e.type = 'user_utterance' ORDER BY e.seq"
        ).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for end_user, data in rows:
        out.setdefault(str(end_user), []).append(json.loads(data))
    return out


def replies(database: Path) -> dict[str, list[dict[str, Any]]]:
    """Per caller id, what the brain did for each user_utterance, in order: its reply (the next agent_message's
    text and token usage) and, for an agent with knowledge, when its search was done (kb_retrieval's tMs, ms
    since the brain was asked)."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT c.end_user, e.type, e.data, e.t_ms FROM conversation_events e JOIN conversations c ON "
            "c.id = e.conversation_id WHERE e.type IN ('user_utterance', 'agent_message', 'kb_retrieval') "
            "ORDER BY e.seq"
        ).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for end_user, kind, data, t_ms in rows:
        said = out.setdefault(str(end_user), [])
        if kind == "user_utterance":
            said.append({"reply": "", "usage": None, "searchMs": None})
        elif said and kind == "kb_retrieval":
            said[-1]["searchMs"] = t_ms
        elif said and not said[-1]["reply"]:
            message = json.loads(data)
            said[-1].update(reply=str(message.get("text", "")), usage=message.get("usage"))
    return out


def breakdown(turns: Sequence[Turn], database: Path) -> list[dict[str, Any]]:
    """Each measured turn beside the server's receipt timings for it (matched by caller id and order)."""
    by_caller = receipts(database)
    answers = replies(database)
    rows = []
    for t in turns:
        utterances = by_caller.get(t.caller_id, [])
        data = utterances[t.index] if t.index < len(utterances) else {}
        timings = data.get("timings", {})
        said = answers.get(t.caller_id, [])
        rows.append(
            {
                **{k: v for k, v in asdict(t).items() if k != "speech_end"},
                "heard": data.get("text", ""),
                **(said[t.index] if t.index < len(said) else {"reply": "", "usage": None, "searchMs": None}),
                "user_turns_in_call": len(utterances),
                **{key: timings.get(key) for key in RECEIPT_TIMINGS},
                "transcribeMs": timings.get("transcribeMs"),  # Whisper's own time
                "transcriptSpeculated": timings.get("transcriptSpeculated"),  # started at the pause's start
                "restMs": rest_ms(t.v2v_ms, timings),
            }
        )
    return rows


def rest_ms(v2v_ms: float | None, timings: dict[str, Any]) -> float | None:
    """What the receipt does not explain: v2v - the VAD stop wait - first agent audio into the leg (itself
    measured from the VAD's pause): the jitter buffer and resampling on the way in, the pacer on the way out."""
    first_audio = timings.get("firstAudioMs")
    if v2v_ms is None or first_audio is None:
        return None
    return v2v_ms - 1000 * VAD_STOP_S - float(first_audio)


async def run_real(args: argparse.Namespace, workdir: Path, speech: Speech, rng: random.Random) -> dict[str, Any]:
    print("... real stack: starting the server (Whisper tiny.en, Qwen2.5 0.5B, Piper, Silero)", flush=True)
    async with voice_server(workdir, "real", fake=False, trace=args.trace_python) as server:
        calls = Calls(server, speech, "4155")
        memory: dict[str, Any] = {"rss_started_mb": server.rss()}
        print("... warm-up call (not counted)", flush=True)
        warm = await calls.conversation([QUESTIONS[0]])
        await asyncio.sleep(1.0)
        memory["rss_idle_after_warmup_mb"] = server.rss()
        print(f"... voice-to-voice latency: {args.calls} calls x {args.questions} questions", flush=True)
        turns = await latency_turns(calls, args.calls, args.questions, rng)
        knowledge_turns: list[Turn] = []
        if args.knowledge_calls:
            print("... knowledge agent: warm-up call (not counted)", flush=True)
            await calls.conversation([KNOWLEDGE_QUESTIONS_LIST[0]], agent="knowledge")
            print(f"... knowledge turns: {args.knowledge_calls} calls x {args.questions} questions", flush=True)
            knowledge_turns = await latency_turns(
                calls, args.knowledge_calls, args.questions, rng, agent="knowledge", asked=KNOWLEDGE_QUESTIONS_LIST
            )
        print(f"... barge-in: {args.barge_ins} calls", flush=True)
        barges = []
        for i in range(args.barge_ins):
            barges.append(await barge_in(calls, rng))
            ms = barges[-1]["ms"]
            print(f"    barge-in {i + 1}/{args.barge_ins}: {'-' if ms is None else f'{ms:.0f}'} ms", flush=True)
        await asyncio.sleep(1.0)
        memory["rss_idle_before_concurrency_mb"] = server.rss()
        print(f"... memory: concurrent calls {args.levels}", flush=True)
        memory["concurrent"] = await concurrency(calls, server, args.levels, rng)
        await asyncio.sleep(1.0)
        memory["rss_idle_after_concurrency_mb"] = server.rss()
        print(f"... memory: back-to-back calls for {args.soak:.0f} s", flush=True)
        memory["soak"] = await soak(calls, server, args.soak, rng)
        memory["rss_end_mb"] = server.rss()
        database = server.database
        log = server.log
    rows = breakdown(turns, database)
    v2v = [t.v2v_ms for t in turns if t.v2v_ms is not None]
    bms = [b["ms"] for b in barges if b["ms"] is not None]
    return {
        "knowledge": turn_figures(breakdown(knowledge_turns, database)),
        "warmup_v2v_ms": [t.v2v_ms for t in warm],
        "turns": rows,
        "v2v_ms": stats(v2v),
        "first_packet_ms": stats([t.first_packet_ms for t in turns if t.first_packet_ms is not None]),
        "unanswered_turns": sum(t.v2v_ms is None for t in turns),
        "parts_ms": {
            key: stats([r[key] for r in rows if r[key] is not None])
            for key in (*RECEIPT_TIMINGS, "transcribeMs", "restMs")
        },
        "speculated_turns": sum(bool(r["transcriptSpeculated"]) for r in rows),
        "prompt_tokens_evaluated": stats([evaluated(r["usage"]) for r in rows if r["usage"]]),
        "barge_ins": barges,
        "barge_in_ms": stats(bms),
        "barge_in_missed": sum(b["ms"] is None for b in barges),
        "memory": memory,
        "server_log": str(log),
    }


def turn_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Latency figures of a set of turns (`breakdown` rows), and how many replies held the fact asked for."""
    right = [r for r in rows if r["question"] in KNOWLEDGE_QUESTIONS and holds_answer(r["question"], r["reply"])]
    return {
        "turns": list(rows),
        "v2v_ms": stats([r["v2v_ms"] for r in rows if r["v2v_ms"] is not None]),
        "parts_ms": {
            key: stats([r[key] for r in rows if r[key] is not None]) for key in (*RECEIPT_TIMINGS, "restMs")
        },
        "unanswered_turns": sum(r["v2v_ms"] is None for r in rows),
        "replies_with_the_fact": len(right),
        # what the model evaluated before its first word: the prompt its prefix cache did not cover
        "prompt_tokens_evaluated": stats([evaluated(r["usage"]) for r in rows if r["usage"]]),
        "search_ms": stats([r["searchMs"] for r in rows if r["searchMs"] is not None]),
    }


def holds_answer(question: str, reply: str) -> bool:
    words = set(reply.lower().replace(",", " ").replace(".", " ").replace("$", " ").split())
    return any(word in words for word in KNOWLEDGE_QUESTIONS[question])


async def run_fake(args: argparse.Namespace, workdir: Path, speech: Speech, rng: random.Random) -> dict[str, Any]:
    print("... instant fakes: starting the --fake server", flush=True)
    async with voice_server(workdir, "fake", fake=True, trace=args.trace_python) as server:
        calls = Calls(server, speech, "6505")
        await calls.conversation([QUESTIONS[0]])  # warm-up
        turns = await latency_turns(calls, args.fake_calls, args.questions, rng)
        soaked = await soak(calls, server, args.fake_soak, rng) if args.fake_soak else None
        database = server.database
    waits_ms = 1000 * (VAD_STOP_S + TURN_TIMEOUT_S)
    v2v = [t.v2v_ms for t in turns if t.v2v_ms is not None]
    rows = breakdown(turns, database)
    return {
        "v2v_ms": stats(v2v),
        "subtracted_ms": waits_ms,
        "overhead_ms": stats([v - waits_ms for v in v2v]),
        "samples_ms": v2v,
        "parts_ms": {key: stats([r[key] for r in rows if r[key] is not None]) for key in (*RECEIPT_TIMINGS, "restMs")},
        "unanswered_turns": sum(t.v2v_ms is None for t in turns),
        "soak": soaked,
    }


# --- report -------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="flowyte-voice-latency-"))
    speech = Speech()
    for text in (*QUESTIONS, *KNOWLEDGE_QUESTIONS, BARGE_IN):
        speech(text)
    rng = random.Random(args.seed)
    started = time.monotonic()
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "quick": args.quick,
        "args": {k: v for k, v in vars(args).items() if k != "levels"} | {"levels": list(args.levels)},
        "workdir": str(workdir),
    }
    if args.only in (None, "real"):
        results["real"] = await run_real(args, workdir, speech, rng)
    if args.only in (None, "fake"):
        results["fake"] = await run_fake(args, workdir, speech, rng)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run, about two minutes")
    parser.add_argument("--calls", type=int, default=5, help="latency calls on the real stack")
    parser.add_argument("--questions", type=int, default=4, help="questions per latency call")
    parser.add_argument("--knowledge-calls", type=int, default=5, help="calls to the knowledge agent")
    parser.add_argument("--barge-ins", type=int, default=10)
    parser.add_argument("--fake-calls", type=int, default=4, help="latency calls on the --fake server")
    parser.add_argument("--levels", default="1,2,4", help="concurrent calls for the memory step")
    parser.add_argument("--soak", type=float, default=240.0, help="seconds of back-to-back calls")
    parser.add_argument("--fake-soak", type=float, default=0.0, help="seconds of back-to-back calls on the --fake "
                        "server (its memory without the models)")  # fmt: skip
    parser.add_argument("--trace-python", action="store_true", help="both servers trace their Python allocations "
                        "(tracemalloc): the soaks report what grew, by line; slows the servers: not for latency "
                        "figures")  # fmt: skip
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=("real", "fake"), help="one of the two servers (no plot)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.questions, args.barge_ins, args.fake_calls, args.knowledge_calls = 1, 3, 3, 1, 1
        args.levels, args.soak = "2", 30.0
    args.levels = [int(x) for x in str(args.levels).split(",")]
    results = uvloop.run(run(args))
    report(results)
    RESULTS.mkdir(exist_ok=True)
    name = "voice_latency" if args.only is None else f"voice_latency-{args.only}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / f"{name}.png")
    print(f"\nran {results['elapsed_s']:.0f} s; server logs in {results['workdir']}")
    print(f"wrote {RESULTS / name}.json" + ("" if args.only else " and .png"))


if __name__ == "__main__":
    main()
