"""Releasing a finished call's memory (control_api/calls/native_memory.py), each in a fresh process."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

from control_api.calls import native_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallopt are glibc's")

# A "call" on a worker thread allocates 2 KB blocks (malloc, as the inference runtimes do) and frees all but
# every 64th: the survivors pin most pages of the heap, which glibc then keeps. RSS in MB after each step.
SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    from pathlib import Path
    from control_api.calls import native_memory

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    limited = native_memory.limit_arenas() if sys.argv[1] == "limit" else None
    kept = []

    def call():
        blocks = [bytearray(2048) for _ in range(100_000)]
        kept.extend(blocks[::64])

    before = rss_mb()
    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    freed = rss_mb()
    trimmed = native_memory.trim()
    after = rss_mb()  # (trim_after_call is this trim on a worker thread)
    print(json.dumps({"limited": limited, "before": before, "freed": freed, "trimmed": trimmed, "after": after}))
    """
)


def run(mode: str, script: str = SCRIPT) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", script, mode], check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


@glibc
def test_trim_gives_back_what_a_call_freed() -> None:
    got = run("limit")
    assert got["limited"] is True
    assert got["freed"] - got["before"] > 150, "the call's blocks were freed but their pages kept"
    assert got["trimmed"] is True
    assert got["freed"] - got["after"] > 100, got


# A finished "call" whose objects point at each other (as pipecat's processors, tasks and handlers do) holds
# a 200 MB buffer: only the cycle collector frees it. Startup objects are frozen first, as the server does.
CYCLE = textwrap.dedent(
    """
    import asyncio, gc, json, sys
    from pathlib import Path
    import numpy as np
    from control_api.calls import native_memory

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    gc.disable()  # Python's own full collections are rare (every ~60 calls in the voice server)
    frozen = native_memory.freeze_startup_objects()

    class Processor:
        pass

    def call():
        a, b = Processor(), Processor()
        a.peer, b.peer = b, a
        a.audio = np.ones(25_000_000)  # 200 MB

    call()
    before = rss_mb()
    asyncio.run(native_memory.release_after_call())
    print(json.dumps({"frozen": frozen, "before": before, "after": rss_mb()}))
    """
)


@glibc
def test_release_after_call_frees_what_the_calls_cycles_held() -> None:
    got = run("-", CYCLE)
    assert got["frozen"] > 1000  # the modules and objects alive at startup
    assert got["before"] - got["after"] > 150, got


@glibc
def test_heap_usage_tells_memory_in_use_from_memory_freed() -> None:
    before = native_memory.heap_usage()
    assert before is not None
    blocks = [bytearray(2048) for _ in range(50_000)]  # ~100 MB from malloc (pymalloc takes only <= 512 bytes)
    held = native_memory.heap_usage()
    del blocks
    freed = native_memory.heap_usage()
    assert held is not None and freed is not None
    mb = 1 << 20
    assert held["in_use"] - before["in_use"] > 95 * mb, (before, held)
    assert abs(freed["in_use"] - before["in_use"]) < 5 * mb, (before, freed)
