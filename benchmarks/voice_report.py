"""The voice benchmark's printed report and plot, from the results dict `voice_latency.py` builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GOALS = {"v2v_p50_ms": 900, "v2v_p95_ms": 1300, "barge_in_p95_ms": 250, "overhead_p95_ms": 30, "mb_per_call_hour": 1}
# The receipt's per-turn timings (control_api/calls/voice.py TurnWriter), each in ms since the VAD's pause.
RECEIPT_TIMINGS = ("speechEndToTranscriptMs", "turnDecidedMs", "firstTokenMs", "firstAudioMs")
MB = 1 << 20


def evaluated(usage: dict[str, int]) -> int:
    """Prompt tokens the LLM evaluated for a turn (not served from its prefix cache)."""
    return usage["promptTokens"] - usage["cachedPromptTokens"]


def line(name: str, s: dict[str, float], goal: str = "") -> str:
    return (
        f"  {name:<38} p50 {s['p50']:7.0f}  p95 {s['p95']:7.0f}  min {s['min']:6.0f}  max {s['max']:6.0f}"
        f"  (n={s['n']}){goal}"
    )


def verdict(value: float, goal: float) -> str:
    return f"  goal <= {goal:g}: {'MET' if value <= goal else 'NOT MET'}"


def report(results: dict[str, Any]) -> None:
    print(f"\nvoice agent on loopback, {results['cpus']} cores, python {results['python']}")
    if "real" in results:
        report_real(results["real"])
    if "fake" in results:
        report_fake(results["fake"])
    if "real" in results:
        report_memory(results["real"]["memory"])


def report_real(real: dict[str, Any]) -> None:
    v = real["v2v_ms"]
    print("\n1. voice-to-voice latency, last caller speech packet -> first agent packet with sound (ms)")
    print(line("voice-to-voice", v))
    print(f"     p50{verdict(v['p50'], GOALS['v2v_p50_ms'])}; p95{verdict(v['p95'], GOALS['v2v_p95_ms'])}")
    print(line("... to the first agent packet at all", real["first_packet_ms"]))
    for key, s in real["parts_ms"].items():
        print(line(f"server receipt {key}", s))
    print(line("prompt tokens evaluated (not cached)", real["prompt_tokens_evaluated"]))
    if real["unanswered_turns"]:
        print(f"  {real['unanswered_turns']} turns got no answer")
    speculated, turns = real["speculated_turns"], len(real["turns"])
    print(f"  transcripts started at the start of the pause (speculated): {speculated} of {turns}")
    print("  per turn (ms): v2v measured; from the receipt, each since the VAD's pause: transcript, turn decided,")
    print("  first LLM token, first agent audio into the leg; rest = v2v - VAD stop - first audio")
    print(f"  {'call':>12}{'#':>3}{'v2v':>7}{'stt':>7}{'turn':>7}{'token':>7}{'audio':>7}{'rest':>7}  heard")
    for r in real["turns"]:
        cells = [r["v2v_ms"], *(r[key] for key in RECEIPT_TIMINGS), r["restMs"]]
        text = "".join(f"{c:>7.0f}" if c is not None else f"{'-':>7}" for c in cells)
        print(f"  {r['caller_id']:>12}{r['index']:>3}{text}  {r['heard'][:60]!r}")
    knowledge = real["knowledge"]
    if knowledge["turns"]:
        k = knowledge["v2v_ms"]
        print("\n1b. voice-to-voice latency of turns answered from the agent's knowledge (ms)")
        print(f"{line('voice-to-voice, knowledge', k)}\n     p50{verdict(k['p50'], GOALS['v2v_p50_ms'])}; "
              f"p95{verdict(k['p95'], GOALS['v2v_p95_ms'])}")  # fmt: skip
        for key, s in knowledge["parts_ms"].items():
            print(line(f"server receipt {key}", s))
        print(line("knowledge search (ms into the turn)", knowledge["search_ms"]))
        print(line("prompt tokens evaluated (not cached)", knowledge["prompt_tokens_evaluated"]))
        right, asked = knowledge["replies_with_the_fact"], len(knowledge["turns"])
        print(f"  replies holding the fact asked for: {right} of {asked}")
        for r in knowledge["turns"]:
            v2v = "-" if r["v2v_ms"] is None else f"{r['v2v_ms']:.0f}"
            token = "-" if r["firstTokenMs"] is None else f"{r['firstTokenMs']:.0f}"
            search = "-" if r["searchMs"] is None else f"{r['searchMs']:.0f}"
            fresh = "-" if not r["usage"] else evaluated(r["usage"])
            print(f"  {v2v:>6} ms (token {token:>5}, search {search:>4}, prompt evaluated {fresh:>4})  "
                  f"{r['heard'][:34]!r} -> {r['reply'][:60]!r}")
    b = real["barge_in_ms"]
    print("\n2. barge-in, caller speech onset -> agent audio stops (last packet + 20 ms), ms")
    print(line("barge-in", b, verdict(b["p95"], GOALS["barge_in_p95_ms"])))
    if real["barge_in_missed"]:
        print(f"  {real['barge_in_missed']} barge-ins where the agent did not stop (or was not speaking)")


def report_fake(fake: dict[str, Any]) -> None:
    o = fake["overhead_ms"]
    print(f"\n3. runtime overhead with instant fakes (STT, LLM, TTS), ms; subtracted {fake['subtracted_ms']:.0f} ms")
    print(line("speech end -> first agent sound", fake["v2v_ms"]))
    print(line("minus the VAD stop + turn timeout", o, verdict(o["p95"], GOALS["overhead_p95_ms"])))
    for key, s in fake["parts_ms"].items():
        print(line(f"server receipt {key}", s))
    if fake["soak"]:
        print("  memory of the fake server (no models):")
        report_soak(fake["soak"], goal=False)


def report_memory(m: dict[str, Any]) -> None:
    print("\n4. server memory (VmRSS, MB)")
    print(f"  started {m['rss_started_mb']:.1f}; idle after the warm-up call {m['rss_idle_after_warmup_mb']:.1f}")
    print(
        f"  idle before the concurrency step {m['rss_idle_before_concurrency_mb']:.1f}, "
        f"after it {m['rss_idle_after_concurrency_mb']:.1f}"
    )
    base = m["rss_idle_before_concurrency_mb"]
    for c in m["concurrent"]:
        per = (c["rss_mb"] - base) / c["calls"]
        print(f"  {c['calls']} calls up: {c['rss_mb']:.1f} MB ({per:+.1f} MB per call over idle)")
    report_soak(m["soak"], goal=True)


def report_soak(s: dict[str, Any], *, goal: bool) -> None:
    """The back-to-back calls: RSS's slope, and what the server said holds its memory, first -> last."""
    print(
        f"  back-to-back: {s['calls']} calls, {s['call_hours'] * 60:.1f} call-minutes, RSS {s['rss_first_mb']:.1f} -> "
        f"{s['rss_last_mb']:.1f} MB; slope {s['mb_per_call_hour']:.1f} MB/call-hour "
        f"({s['mb_per_call_hour_after_2_calls']:.1f} after the first 2 calls, "
        f"{s['mb_per_call_hour_second_half']:.1f} over the second half)"
        + (verdict(s["mb_per_call_hour_second_half"], GOALS["mb_per_call_hour"]) if goal else "")
    )
    print(
        f"  second half, from the median RSS of its first quarter to that of its last: "
        f"{s['mb_per_call_hour_second_half_medians']:.1f} MB/call-hour"
        + (verdict(s["mb_per_call_hour_second_half_medians"], GOALS["mb_per_call_hour"]) if goal else "")
    )
    if not s["holdings"]:
        return
    first, last = s["holdings"][0], s["holdings"][-1]
    print(
        f"  the LLM's saved KV states {first['llm_saved_states']} -> {last['llm_saved_states']} "
        f"({first['llm_saved_bytes'] / MB:.1f} -> {last['llm_saved_bytes'] / MB:.1f} MB, bounded by its config); "
        f"RSS less them: {s['mb_per_call_hour_second_half_without_llm_cache']:.1f} MB/call-hour over the second half"
    )
    if first["heap"] and last["heap"]:
        print(
            f"  glibc heap in use {first['heap']['in_use'] / MB:.1f} -> {last['heap']['in_use'] / MB:.1f} MB "
            f"({s['heap_in_use_mb_per_call_hour_second_half']:.1f} MB/call-hour over the second half), "
            f"free inside the arenas {first['heap']['free'] / MB:.1f} -> {last['heap']['free'] / MB:.1f} MB"
        )
    if first["sqlite_bytes"] is not None:
        print(f"  SQLite {first['sqlite_bytes'] / MB:.1f} -> {last['sqlite_bytes'] / MB:.1f} MB (page caches, bounded)")
    print(
        f"  Python blocks {first['python_blocks']} -> {last['python_blocks']}; RSS of anonymous memory "
        f"{first['rss_anon_mb']:.1f} -> {last['rss_anon_mb']:.1f} MB, of mapped files (the models' pages read) "
        f"{first['rss_file_mb']:.1f} -> {last['rss_file_mb']:.1f} MB"
    )
    if "python_traced_bytes" in last:
        print(
            f"  Python allocations (tracemalloc) {first['python_traced_bytes'] / MB:.2f} -> "
            f"{last['python_traced_bytes'] / MB:.2f} MB; grown most since the first call:"
        )
        for grown in last["python_grown"][:5]:
            where = " <- ".join(line.strip() for line in grown["at"][0::2][:3])  # the allocating frame, callers
            print(f"    {grown['bytes'] / 1024:+9.1f} KiB {grown['count']:+6d} blocks  {where}")
    print(
        "  (a short window: a few MB of allocator or cache growth extrapolates to a large per-call-hour figure;\n"
        "   read the slope as an upper bound on a leak, not a measurement of one)"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    if "real" not in results or "fake" not in results:
        return  # the plot needs both runs
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, fake = results["real"], results["fake"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    v2v = [r["v2v_ms"] for r in real["turns"] if r["v2v_ms"] is not None]
    known = [r["v2v_ms"] for r in real["knowledge"]["turns"] if r["v2v_ms"] is not None]
    ax.hist([v2v, known], bins=20, color=["tab:blue", "tab:purple"], label=["plain", "from knowledge"])
    ax.legend(fontsize=8)
    for goal, style in ((GOALS["v2v_p50_ms"], ":"), (GOALS["v2v_p95_ms"], "--")):
        ax.axvline(goal, ls=style, color="grey")
    ax.set(xlabel="ms", ylabel="turns", title="voice-to-voice latency (goals p50 900, p95 1300)")
    ax = axes[0][1]
    rows = [r for r in real["turns"] if r["v2v_ms"] is not None]
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for key, color in (("speechEndToTranscriptMs", "tab:orange"), ("firstTokenMs", "tab:green")):
        values = np.array([r[key] or 0.0 for r in rows])
        ax.bar(x, values, bottom=bottom, color=color, label=key)
        bottom += values
    ax.plot(x, [r["v2v_ms"] for r in rows], "k.", label="measured v2v")
    ax.set(xlabel="turn", ylabel="ms", title="per turn: server receipt parts vs measured")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.hist([b["ms"] for b in real["barge_ins"] if b["ms"] is not None], bins=12, color="tab:red", label="barge-in")
    ax.axvline(GOALS["barge_in_p95_ms"], ls="--", color="grey")
    ax.set(xlabel="ms", ylabel="barge-ins", title="barge-in: onset -> agent audio stops (goal p95 250)")
    ax = axes[1][1]
    soak = real["memory"]["soak"]
    minutes = [s[0] / 60 for s in soak["samples"]]
    ax.plot(minutes, [s[1] for s in soak["samples"]], ".-", label="RSS after each call")
    saved = [h["llm_saved_bytes"] / MB for h in soak["holdings"]]
    ax.plot(minutes, [s[1] - c for s, c in zip(soak["samples"], saved, strict=True)], ".-", label="RSS less LLM cache")
    ax.set(xlabel="cumulative call-minutes", ylabel="MB", title="server memory over back-to-back calls")
    ax.legend(fontsize=8, loc="upper left")
    heap = [(m, h["heap"]["in_use"] / MB) for m, h in zip(minutes, soak["holdings"], strict=True) if h["heap"]]
    if heap:
        twin = ax.twinx()
        twin.plot([m for m, _ in heap], [v for _, v in heap], ".-", color="tab:green", label="glibc heap in use")
        twin.set(ylabel="heap in use MB")
        twin.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"flowyte voice agent, loopback, {results['cpus']} cores (fake-model overhead p95 "
                 f"{fake['overhead_ms']['p95']:.0f} ms)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
