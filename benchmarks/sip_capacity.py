"""SIP/RTP edge capacity against SIPp over loopback: concurrent echo calls, OPTIONS throughput, call setup.

The edge runs alone in its own process (benchmarks/sip_edge_server.py: `SipEdge` on uvloop, every call in
echo test mode), so its CPU time can be read from /proc/<pid>/stat apart from SIPp's. Three phases:

1. Concurrent calls. For each level N, SIPp (tests/peers/scenarios/uac_speech.xml) places N calls at a rate
   that reaches N within the ramp (`-r`, `-l N`, `-m N`); each call plays espeak-ng speech as PCMU RTP
   (play_pcap_audio, tiled to cover the whole call) and hangs up after the hold time, so the edge receives
   and sends 50 packets/s per call. The steady-state window runs from the last call's answer (+1 s) to the
   first hang-up (-0.5 s), both taken from the server's per-call JSON lines; over it we report the edge's
   CPU (utime+stime delta, % of one core, total and per call), SIPp's CPU and the whole box's. At hang-up
   the server logs each leg's `media_stats()`: RTP pacing lateness p50/p99, packets both ways, loss.
   Failed calls come from SIPp's exit code and its -trace_stat CSV.
2. OPTIONS throughput. tests/peers/scenarios/bench_options.xml at increasing rates against a fresh edge;
   the highest rate with no failed transaction, no retransmission and at least 97% of the offered rate
   achieved. One OPTIONS transaction is two SIP messages (request in, 200 out).
3. Call setup latency at a moderate call rate: SIPp's response time (rtd: INVITE sent -> 200 received,
   whole milliseconds from -trace_rtt) and the same interval from -trace_msg timestamps (microseconds).

Prints the figures, writes benchmarks/results/sip_capacity.json and sip_capacity.png. Needs sipp, espeak-ng
and sox, and root (SIPp sends the pcap from a raw socket).

    .venv/bin/python benchmarks/sip_capacity.py [--quick] [--levels 50,100,150,200] [--hold 15] [--ramp 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import require_binary
from tests.peers.ports import HOST, free_port, free_rtp_port
from tests.peers.sipp import scenario_path
from tests.peers.speech import pad, speech_pcm, write_rtp_pcap

RESULTS = Path(__file__).parent / "results"
SERVER = Path(__file__).parent / "sip_edge_server.py"
RTP_PORTS = (30000, 31000)  # two ports (RTP + RTCP) per call: room for 500 calls
SPEECH = "Hello, I would like to book a table for two at eight tonight, please. Could you also check the parking?"
TARGET_CALLS, TARGET_PCT_PER_CALL = 150, 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVICE = "+15550100"


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) if samples else float("nan")


# --- CPU accounting from /proc ------------------------------------------------------------------------


def process_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (all its threads) in clock ticks, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces: skip past it
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from after the name


def box_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks over all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def box_busy_now(seconds: float = 3.0) -> float:
    """How busy the box is with nothing of ours running, % of all cores (other tenants, a parallel build)."""
    busy0, total0 = box_ticks()
    time.sleep(seconds)
    busy1, total1 = box_ticks()
    return 100 * (busy1 - busy0) / max(1, total1 - total0)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class CpuSampler:
    """Samples the CPU ticks of named processes and of the whole box every ``period`` seconds in a thread;
    ``percent(name, t0, t1)`` is the share of one core a process used between two wall-clock instants."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.pids: dict[str, int] = {}
        self.samples: dict[str, list[tuple[float, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.samples[name] = []

    def _sample(self) -> None:
        now = time.time()
        for name, pid in list(self.pids.items()):
            ticks = process_ticks(pid)
            if ticks is not None:
                self.samples[name].append((now, ticks))
        busy, total = box_ticks()
        self.samples.setdefault("box_busy", []).append((now, busy))
        self.samples.setdefault("box_total", []).append((now, total))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _ticks_at(self, name: str, t: float) -> float:
        points = self.samples.get(name, [])
        if len(points) < 2:
            return float("nan")
        times, ticks = zip(*points, strict=True)
        return float(np.interp(t, times, ticks))

    def percent(self, name: str, t0: float, t1: float) -> float:
        """% of one core used by ``name`` between ``t0`` and ``t1`` (interpolated between samples)."""
        return 100 * (self._ticks_at(name, t1) - self._ticks_at(name, t0)) / CLK_TCK / (t1 - t0)

    def box_percent(self, t0: float, t1: float) -> float:
        """How busy the whole box was, % of all its cores."""
        busy = self._ticks_at("box_busy", t1) - self._ticks_at("box_busy", t0)
        total = self._ticks_at("box_total", t1) - self._ticks_at("box_total", t0)
        return 100 * busy / total if total > 0 else float("nan")


# --- the edge and SIPp as processes ---------------------------------------------------------------------


@dataclass
class Edge:
    process: subprocess.Popen[str]
    port: int
    stats: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def calls(self) -> list[dict[str, Any]]:
        if not self.stats.exists():
            return []
        return [json.loads(line) for line in self.stats.read_text().splitlines() if line.strip()]


@contextmanager
def edge_server(workdir: Path, name: str, max_calls: int) -> Iterator[Edge]:
    """A fresh sip_edge_server.py process; its per-call JSON lines go to ``workdir/<name>-calls.jsonl``."""
    stats = workdir / f"{name}-calls.jsonl"
    low, high = RTP_PORTS
    command = [sys.executable, str(SERVER), "--host", HOST, "--rtp-ports", f"{low}-{high}"]
    command += ["--max-calls", str(max_calls), "--stats", str(stats)]
    with open(workdir / f"{name}-server.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the server prints its SIP port once it listens
        if not line.strip().isdigit():
            raise RuntimeError(f"edge server did not start: {(workdir / f'{name}-server.log').read_text()[-2000:]}")
        yield Edge(process, int(line), stats)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class SippRun:
    returncode: int
    started: float
    ended: float
    stats: dict[str, str]  # the last line of -trace_stat (cumulative counters)
    rtd_ms: list[float]  # one per call (-trace_rtt)
    errors: str
    workdir: Path

    def count(self, column: str) -> int:
        return int(self.stats.get(column, "0") or 0)

    @property
    def failed(self) -> int:
        return self.count("FailedCall(C)")

    @property
    def retransmissions(self) -> int:
        return self.count("Retransmissions(C)")

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall(C)")

    @property
    def created(self) -> int:
        return self.count("TotalCallCreated")

    def failure_breakdown(self) -> dict[str, int]:
        return {
            key[len("Failed") : -3]: int(value)
            for key, value in self.stats.items()
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)" and value not in ("", "0")
        }


def sipp_command(
    scenario: str, remote: int, *, rate: float, limit: int, total: int, timeout: float, extra: Sequence[str] = ()
) -> list[str]:
    """SIPp as a UAC at ``rate`` calls/s, at most ``limit`` at once, ``total`` in all, with stats traces."""
    cmd = [require_binary("sipp"), "-sf", str(scenario_path(scenario)), f"{HOST}:{remote}"]
    cmd += ["-i", HOST, "-p", str(free_port(HOST)), "-t", "u1", "-mi", HOST, "-mp", str(free_rtp_port(HOST))]
    cmd += ["-s", SERVICE, "-key", "caller", "bench", "-r", f"{rate:g}", "-l", str(limit), "-m", str(total)]
    cmd += ["-nostdin", "-timeout", f"{timeout:g}s", "-timeout_error"]
    cmd += ["-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_rtt", "-rtt_freq", "1"]
    cmd += ["-trace_err", "-error_file", "errors.log"]
    return cmd + list(extra)


def run_sipp(cmd: list[str], workdir: Path, sampler: CpuSampler, timeout: float) -> SippRun:
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(workdir / "stdout.txt", "wb") as out:
        process = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    sampler.watch("sipp", process.pid)
    try:
        returncode = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = process.wait(5)
    ended = time.time()
    stat_files = list(workdir.glob("stat.csv")) or list(workdir.glob("*_.csv"))
    rows: list[dict[str, str]] = []
    if stat_files:
        with open(stat_files[0], newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
    rtd: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with open(path, newline="") as f:
            rtd += [float(row["response_time_ms"]) for row in csv.DictReader(f, delimiter=";")]
    errors = (workdir / "errors.log").read_text(errors="replace") if (workdir / "errors.log").exists() else ""
    return SippRun(returncode, started, ended, rows[-1] if rows else {}, rtd, errors, workdir)


def speech_pcap(path: Path, seconds: float) -> float:
    """espeak-ng speech, repeated to last ``seconds``, as a PCMU RTP pcap; returns its duration."""
    speech = pad(speech_pcm(SPEECH), 0.0, 0.4)
    return write_rtp_pcap(path, np.resize(speech, round(seconds * 8000)).astype(np.int16))


# --- phase 1: concurrent calls --------------------------------------------------------------------------


@dataclass
class Level:
    calls: int
    rate: float
    result: dict[str, Any] = field(default_factory=dict)


def steady_window(calls: list[dict[str, Any]], fallback: tuple[float, float]) -> tuple[float, float]:
    """From the last answer (+1 s) to the first hang-up (-0.5 s): every call that made it is up."""
    if not calls:
        return fallback
    return max(c["started"] for c in calls) + 1.0, min(c["ended"] for c in calls) - 0.5


def media_summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    if not calls:
        return {}
    secs = [max(1e-3, c["ended"] - c["started"]) for c in calls]
    p50s, p99s = [c["pacing_p50_ms"] for c in calls], [c["pacing_p99_ms"] for c in calls]
    return {
        "pacing_p50_ms_median": statistics.median(p50s),
        "pacing_p99_ms_median": statistics.median(p99s),
        "pacing_p99_ms_max": max(p99s),
        "pacing_skipped_ticks": sum(c["pacing_skipped"] for c in calls),
        "pacing_skipped_pct": 100 * sum(c["pacing_skipped"] for c in calls) / (50 * sum(secs)),
        "sent_pps_per_call": statistics.median(c["packets_sent"] / s for c, s in zip(calls, secs, strict=True)),
        "received_pps_per_call": statistics.median(c["packets_received"] / s for c, s in zip(calls, secs, strict=True)),
        "packets_sent": sum(c["packets_sent"] for c in calls),
        "packets_received": sum(c["packets_received"] for c in calls),
        "lost": sum(c["lost"] for c in calls),
        "late": sum(c["late"] for c in calls),
        "concealed": sum(c["concealed"] for c in calls),
        "dropped_outbound": sum(c["dropped_outbound"] for c in calls),
    }


def run_level(level: Level, args: argparse.Namespace, workdir: Path, pcap: Path) -> dict[str, Any]:
    n, name = level.calls, f"calls-{level.calls}"
    ramp = n / level.rate
    timeout = ramp + args.hold + 60
    with edge_server(workdir, name, max_calls=n + 50) as edge, CpuSampler() as sampler:
        sampler.watch("edge", edge.pid)
        time.sleep(0.5)
        cmd = sipp_command("uac_speech", edge.port, rate=level.rate, limit=n, total=n, timeout=timeout)
        cmd += ["-key", "pcap", str(pcap), "-set", "audio_ms", str(int(args.hold * 1000))]
        run = run_sipp(cmd, workdir / name, sampler, timeout + 10)
        time.sleep(0.5)  # the last hang-ups reach the server's JSON lines
        calls = edge.calls()
        rss = rss_mb(edge.pid)
    t0, t1 = steady_window(calls, (run.started + ramp + 1.0, run.started + args.hold - 0.5))
    up = sum(1 for c in calls if c["started"] <= t0 and c["ended"] >= t1)
    edge_pct, sipp_pct = sampler.percent("edge", t0, t1), sampler.percent("sipp", t0, t1)
    return {
        "calls": n,
        "rate_cps": level.rate,
        "hold_s": args.hold,
        "window_s": round(t1 - t0, 2),
        "calls_up_in_window": up,
        "edge_cpu_pct_of_core": edge_pct,
        "edge_cpu_pct_per_call": edge_pct / up if up else float("nan"),
        "sipp_cpu_pct_of_core": sipp_pct,
        "box_busy_pct_of_all_cores": sampler.box_percent(t0, t1),
        "others_cpu_pct_of_core": sampler.box_percent(t0, t1) * (os.cpu_count() or 1) - edge_pct - sipp_pct,
        "edge_rss_mb": rss,
        "answered": len(calls),
        "sipp_exit": run.returncode,
        "sipp_successful": run.successful,
        "sipp_failed": run.failed,
        "sipp_failures": run.failure_breakdown(),
        "sipp_retransmissions": run.retransmissions,
        "setup_rtd_ms_p50": percentile(run.rtd_ms, 50),
        "setup_rtd_ms_p95": percentile(run.rtd_ms, 95),
        "media": media_summary(calls),
        "sipp_errors_head": run.errors[:1500],
    }


# --- phase 2: OPTIONS throughput -----------------------------------------------------------------------


def options_throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best = 0.0
    with edge_server(workdir, "options", max_calls=10) as edge, CpuSampler() as sampler:
        sampler.watch("edge", edge.pid)
        time.sleep(0.5)
        for rate in args.options_rates:
            total = int(rate * args.options_seconds)
            cmd = sipp_command(
                "bench_options", edge.port, rate=rate, limit=max(100, int(rate)), total=total, timeout=60
            )
            run = run_sipp(cmd, workdir / f"options-{rate}", sampler, 90)
            created_per_s = float(run.stats.get("CallRate(C)", "0") or 0)  # SIPp: created / elapsed
            achieved = created_per_s * run.successful / run.created if run.created else 0.0
            t0, t1 = run.started + 0.5, run.ended - 0.2
            edge_pct, sipp_pct = sampler.percent("edge", t0, t1), sampler.percent("sipp", t0, t1)
            clean = run.returncode == 0 and run.failed == 0 and run.retransmissions == 0 and achieved >= 0.97 * rate
            steps.append(
                {
                    "offered_per_s": rate,
                    "achieved_per_s": achieved,
                    "messages_per_s": 2 * achieved,
                    "successful": run.successful,
                    "failed": run.failed,
                    "retransmissions": run.retransmissions,
                    "sipp_exit": run.returncode,
                    "rtd_ms_p50": percentile(run.rtd_ms, 50),
                    "rtd_ms_p99": percentile(run.rtd_ms, 99),
                    "edge_cpu_pct_of_core": edge_pct,
                    "edge_cpu_us_per_options": 1e4 * edge_pct / achieved if achieved else float("nan"),
                    "sipp_cpu_pct_of_core": sipp_pct,
                    "others_cpu_pct_of_core": sampler.box_percent(t0, t1) * (os.cpu_count() or 1) - edge_pct - sipp_pct,
                    "clean": clean,
                }
            )
            if clean:
                best = max(best, achieved)
            else:
                break  # the first rate with a failure, a retransmission or a shortfall ends the ramp
        rss = rss_mb(edge.pid)
    return {"steps": steps, "max_clean_options_per_s": best, "max_clean_messages_per_s": 2 * best, "edge_rss_mb": rss}


# --- phase 3: call setup latency ------------------------------------------------------------------------

_SEPARATOR = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d [\d:.]+)\s*$", re.MULTILINE)
_INVITE_200 = re.compile(r"^\s*SIP/2.0 200 .*^CSeq:\s*\d+ INVITE", re.MULTILINE | re.IGNORECASE | re.DOTALL)


def invite_to_200_ms(messages_log: str) -> list[float]:
    """INVITE first sent -> first 200 (CSeq INVITE) received, per Call-ID, from -trace_msg timestamps."""
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    parts = _SEPARATOR.split(messages_log)
    for stamp, chunk in zip(parts[1::2], parts[2::2], strict=True):
        at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + float("0" + stamp[19:])
        call_id = re.search(r"^Call-ID:\s*(\S+)", chunk, re.MULTILINE | re.IGNORECASE)
        if call_id is None:
            continue
        key = call_id.group(1)
        if " sent" in chunk[:80] and re.search(r"^\s*INVITE ", chunk, re.MULTILINE):
            sent.setdefault(key, at)
        elif " received" in chunk[:80] and _INVITE_200.search(chunk):
            answered.setdefault(key, at)
    return [1000 * (answered[k] - sent[k]) for k in sent if k in answered]


def setup_latency(args: argparse.Namespace, workdir: Path, pcap: Path) -> dict[str, Any]:
    rate, seconds, hold = args.setup_rate, args.setup_seconds, args.setup_hold
    total = int(rate * seconds)
    with edge_server(workdir, "setup", max_calls=total + 10) as edge, CpuSampler() as sampler:
        sampler.watch("edge", edge.pid)
        time.sleep(0.5)
        cmd = sipp_command("uac_speech", edge.port, rate=rate, limit=total, total=total, timeout=seconds + hold + 60)
        cmd += ["-key", "pcap", str(pcap), "-set", "audio_ms", str(int(hold * 1000))]
        cmd += ["-trace_msg", "-message_file", "messages.log"]
        run = run_sipp(cmd, workdir / "setup", sampler, seconds + hold + 70)
    log = run.workdir / "messages.log"
    precise = invite_to_200_ms(log.read_text(errors="replace")) if log.exists() else []
    return {
        "rate_cps": rate,
        "calls": total,
        "hold_s": hold,
        "concurrent_about": round(rate * hold),
        "sipp_failed": run.failed,
        "sipp_retransmissions": run.retransmissions,
        "rtd_ms_p50": percentile(run.rtd_ms, 50),
        "rtd_ms_p95": percentile(run.rtd_ms, 95),
        "rtd_ms_max": max(run.rtd_ms, default=float("nan")),
        "trace_msg_ms_p50": percentile(precise, 50),
        "trace_msg_ms_p95": percentile(precise, 95),
        "trace_msg_ms_max": max(precise, default=float("nan")),
        "samples": len(run.rtd_ms),
    }


# --- report -------------------------------------------------------------------------------------------


def report_calls(levels: list[dict[str, Any]]) -> None:
    print("\n1. concurrent echo calls (speech RTP in, echo RTP out, 50 packets/s each way per call)")
    head = f"{'calls':>6}{'up':>5}{'win s':>6}{'edge %core':>11}{'%/call':>7}{'sipp %core':>11}{'others':>7}"
    print(
        head + f"{'pace p50':>9}{'p99 med':>8}{'p99 max':>8}{'skip %':>7}{'rx pps':>7}{'tx pps':>7}{'drops':>7}"
        f"{'failed':>7}"
    )
    for r in levels:
        m = r["media"] or {}
        print(
            f"{r['calls']:>6}{r['calls_up_in_window']:>5}{r['window_s']:>6.1f}{r['edge_cpu_pct_of_core']:>11.1f}"
            f"{r['edge_cpu_pct_per_call']:>7.3f}{r['sipp_cpu_pct_of_core']:>11.1f}{r['others_cpu_pct_of_core']:>7.0f}"
            f"{m.get('pacing_p50_ms_median', float('nan')):>9.2f}{m.get('pacing_p99_ms_median', float('nan')):>8.2f}"
            f"{m.get('pacing_p99_ms_max', float('nan')):>8.2f}{m.get('pacing_skipped_pct', 0):>7.2f}"
            f"{m.get('received_pps_per_call', 0):>7.1f}{m.get('sent_pps_per_call', 0):>7.1f}"
            f"{m.get('dropped_outbound', 0):>7}{r['sipp_failed']:>7}"
        )
        if r["sipp_failed"] or r["sipp_exit"]:
            print(f"       sipp exit {r['sipp_exit']}, failures {r['sipp_failures']}, answered {r['answered']}")
    print(
        "  edge/sipp %core: each process over the steady window, 100 = one core; others: the rest of the box's busy\n"
        "  time (other processes, unattributed softirq), %core. pace: how late the 20 ms send ticks fired (median\n"
        "  over calls of each call's p50/p99; uvloop timers have 1 ms resolution); skip %: share of ticks skipped\n"
        "  because the pacer was over a frame late (each a 20 ms timestamp gap the caller hears); tx/rx pps:\n"
        "  median per call; drops: outbound frames dropped from a full buffer."
    )


def carried(r: dict[str, Any]) -> bool:
    """Every call set up and up together, and the echo kept time: >= 98% of 50 packets/s sent per call and
    under 0.1% of pacing ticks skipped. A starved edge shows low CPU per call only because it fell behind."""
    m = r["media"] or {}
    ticks = 50 * r["calls"] * r["hold_s"]
    return bool(
        r["sipp_failed"] == 0
        and r["sipp_exit"] == 0
        and r["calls_up_in_window"] == r["calls"]
        and m.get("sent_pps_per_call", 0) >= 49
        and m.get("pacing_skipped_ticks", ticks) <= 0.001 * ticks
    )


def verdict(levels: list[dict[str, Any]]) -> dict[str, Any]:
    most = max((r["calls"] for r in levels if carried(r)), default=0)
    at = [r for r in levels if r["calls"] >= TARGET_CALLS]
    per_call = [r["edge_cpu_pct_per_call"] for r in at]
    met = bool(at) and all(carried(r) for r in at) and max(per_call) <= TARGET_PCT_PER_CALL
    return {
        "target": f">= {TARGET_CALLS} concurrent calls at <= {TARGET_PCT_PER_CALL}% of a core per call",
        "most_concurrent_calls_carried": most,
        "worst_pct_per_call_at_or_above_target_calls": max(per_call, default=float("nan")),
        "met": met,
    }


def report(results: dict[str, Any]) -> None:
    print(f"SIP/RTP edge capacity on {results['cpus']} cores (python {results['python']}, uvloop)")
    print(f"box busy before the run, with nothing of ours running: {results['box_busy_before_pct']:.0f}% of all cores")
    report_calls(results["calls"])
    v = results["verdict"]
    print(
        f"  target {v['target']}: {'MET' if v['met'] else 'NOT MET'} (most calls carried cleanly "
        f"{v['most_concurrent_calls_carried']}, worst per call at >= {TARGET_CALLS} calls "
        f"{v['worst_pct_per_call_at_or_above_target_calls']:.3f}%)"
        if any(r["calls"] >= TARGET_CALLS for r in results["calls"])
        else f"  target {v['target']}: not measured (no level of {TARGET_CALLS} calls or more in this run)"
    )
    opt = results["options"]
    print("\n2. OPTIONS throughput (one transaction = request in + 200 out = 2 messages)")
    print(
        f"{'offered/s':>10}{'achieved/s':>11}{'failed':>7}{'retrans':>8}{'rtd p50':>8}{'rtd p99':>8}"
        f"{'edge %core':>11}{'µs/OPTIONS':>11}{'sipp %core':>11}{'others':>7}"
    )
    for s in opt["steps"]:
        print(
            f"{s['offered_per_s']:>10g}{s['achieved_per_s']:>11.0f}{s['failed']:>7}{s['retransmissions']:>8}"
            f"{s['rtd_ms_p50']:>8.1f}{s['rtd_ms_p99']:>8.1f}{s['edge_cpu_pct_of_core']:>11.1f}"
            f"{s['edge_cpu_us_per_options']:>11.1f}{s['sipp_cpu_pct_of_core']:>11.1f}{s['others_cpu_pct_of_core']:>7.0f}"
        )
    print(
        f"  highest clean rate: {opt['max_clean_options_per_s']:.0f} OPTIONS/s = "
        f"{opt['max_clean_messages_per_s']:.0f} SIP messages/s"
    )
    st = results["setup"]
    print(
        f"\n3. call setup latency, INVITE sent -> 200 received, {st['rate_cps']:g} calls/s "
        f"({st['calls']} calls, ~{st['concurrent_about']} up at once, {st['sipp_failed']} failed)"
    )
    print(
        f"  SIPp rtd (whole ms):        p50 {st['rtd_ms_p50']:.1f} ms, p95 {st['rtd_ms_p95']:.1f} ms, "
        f"max {st['rtd_ms_max']:.1f} ms ({st['samples']} calls)"
    )
    print(
        f"  -trace_msg timestamps (µs): p50 {st['trace_msg_ms_p50']:.2f} ms, p95 {st['trace_msg_ms_p95']:.2f} ms, "
        f"max {st['trace_msg_ms_max']:.2f} ms"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = results["calls"]
    n = [r["calls"] for r in levels]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    ax.plot(n, [r["edge_cpu_pct_of_core"] for r in levels], "o-", label="edge process")
    ax.plot(n, [r["sipp_cpu_pct_of_core"] for r in levels], "s--", label="SIPp (caller)")
    ax.plot(n, [TARGET_PCT_PER_CALL * x for x in n], ":", color="grey", label=f"target {TARGET_PCT_PER_CALL}%/call")
    ax.set(xlabel="concurrent echo calls", ylabel="CPU, % of one core", title="CPU over the steady window")
    ax.legend()
    ax = axes[0][1]
    ax.plot(n, [r["edge_cpu_pct_per_call"] for r in levels], "o-")
    for r in levels:
        if not carried(r):  # starved: its CPU per call is low only because it fell behind
            ax.annotate(" not carried", (r["calls"], r["edge_cpu_pct_per_call"]), color="tab:red", ha="right")
    ax.axhline(TARGET_PCT_PER_CALL, ls=":", color="grey", label="target")
    ax.set(xlabel="concurrent echo calls", ylabel="% of one core per call", title="edge CPU per call")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax = axes[1][0]
    media = [r["media"] or {} for r in levels]
    ax.plot(n, [m.get("pacing_p50_ms_median", np.nan) for m in media], "o-", label="p50 (median over calls)")
    ax.plot(n, [m.get("pacing_p99_ms_median", np.nan) for m in media], "s-", label="p99 (median over calls)")
    ax.plot(n, [m.get("pacing_p99_ms_max", np.nan) for m in media], "^--", label="p99 (worst call)")
    ax.set(xlabel="concurrent echo calls", ylabel="ms late", title="RTP send pacing lateness (20 ms ticks)")
    ax.legend()
    ax = axes[1][1]
    steps = results["options"]["steps"]
    offered = [s["offered_per_s"] for s in steps]
    ax.plot(offered, [s["achieved_per_s"] for s in steps], "o-", label="answered OPTIONS/s")
    ax.plot(offered, offered, ":", color="grey", label="offered")
    for s in steps:
        if not s["clean"]:
            ax.annotate("failures/retrans ", (s["offered_per_s"], s["achieved_per_s"]), color="tab:red", ha="right")
    ax.set(xlabel="offered OPTIONS/s", ylabel="OPTIONS/s", title="out-of-dialog OPTIONS throughput")
    ax.legend()
    fig.suptitle(f"flowyte SIP/RTP edge vs SIPp, loopback, {results['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 calls for 5 s, two OPTIONS rates")
    parser.add_argument("--levels", default="50,100,150,200", help="concurrent call levels")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds each call stays up after the 200")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to reach each level")
    parser.add_argument("--options-rates", default="250,500,750,1000,1250,1500,1750,2000,2500,3000,4000,6000")
    parser.add_argument("--options-seconds", type=float, default=5.0)
    parser.add_argument("--setup-rate", type=float, default=20.0, help="calls/s for the setup latency phase")
    parser.add_argument("--setup-seconds", type=float, default=15.0)
    parser.add_argument("--setup-hold", type=float, default=3.0)
    args = parser.parse_args()
    if args.quick:
        args.levels, args.hold, args.ramp = "20", 5.0, 2.0
        args.options_rates, args.options_seconds = "250,500", 2.0
        args.setup_rate, args.setup_seconds, args.setup_hold = 10.0, 3.0, 1.0
    levels = [int(x) for x in args.levels.split(",")]
    args.options_rates = [float(x) for x in args.options_rates.split(",")]
    if os.geteuid() != 0:
        print("warning: SIPp's play_pcap_audio needs root (raw socket); calls will carry no inbound RTP")

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flowyte-sip-capacity-"))
    call_pcap, setup_pcap = workdir / "speech.pcap", workdir / "setup.pcap"
    speech_pcap(call_pcap, args.hold + 1.0)
    speech_pcap(setup_pcap, args.setup_hold + 1.0)
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": args.quick,
        "hold_s": args.hold,
        "ramp_s": args.ramp,
        "workdir": str(workdir),
        "box_busy_before_pct": box_busy_now(),
        "calls": [],
    }
    for n in levels:
        level = Level(n, rate=max(1.0, round(n / args.ramp, 1)))
        print(f"... {n} concurrent calls ({level.rate:g} calls/s, hold {args.hold:g} s)", flush=True)
        results["calls"].append(run_level(level, args, workdir, call_pcap))
    results["verdict"] = verdict(results["calls"])
    print("... OPTIONS throughput", flush=True)
    results["options"] = options_throughput(args, workdir)
    print("... call setup latency", flush=True)
    results["setup"] = setup_latency(args, workdir, setup_pcap)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print()
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sip_capacity.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "sip_capacity.png")
    print(f"\nran {results['elapsed_s']:.0f} s; SIPp logs in {workdir}")
    print(f"wrote {RESULTS / 'sip_capacity.json'} and sip_capacity.png")


if __name__ == "__main__":
    main()
