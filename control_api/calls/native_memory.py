"""Memory between calls: free what a finished call held, and hand it back to the system.

A call's memory is mostly native: onnxruntime (Silero, Smart Turn, Piper), CTranslate2 (Whisper) and
llama.cpp allocate from their own worker threads, and glibc's allocator gives each allocating thread an
arena of its own (up to eight per core). What a call frees stays in those arenas, scattered among chunks
still in use, so the process's RSS creeps up call after call although nothing leaks: the soak in
benchmarks/voice_latency.py saw ~90 MB per call-hour with under 2 KB of Python objects per call.

`limit_arenas()` caps the arenas (`mallopt(M_ARENA_MAX)`), so freed chunks are found again by the next
call's threads instead of sitting in an arena nobody uses; call it before the models start their threads.
`trim()` (`malloc_trim(0)`) returns the free pages inside every arena to the system; it walks the heaps, a
few milliseconds, so it runs off the event loop. Elsewhere than glibc (musl, macOS) both do nothing.

And a finished call's Python objects hold native buffers (audio, model outputs) in reference cycles
(pipecat's processors, tasks and event handlers point at each other), which only Python's full garbage
collection frees; it ran every ~60 calls, so RSS rose ~4 MB a call and fell back ~280 MB at once. A full
collection scans every object, ~125 ms with the models loaded, too long a pause for calls in progress, so
`freeze_startup_objects()` moves everything alive once the server is up (models, modules) out of the
collector's sight (`gc.freeze`), and `release_after_call()` then collects - now a scan of what was made
since, milliseconds - and trims.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc <malloc.h>
DEFAULT_ARENAS = 2


@cache
def _libc() -> Any | None:
    """glibc, when this process runs on it (malloc_trim is a glibc extension)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


class _Mallinfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (<malloc.h>, glibc 2.33 and later): every field a size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    ]  # fmt: skip


def heap_usage() -> dict[str, int] | None:
    """glibc's own account of the heap, summed over every arena (`mallinfo2`), in bytes: `in_use` (allocated
    and not freed), `free` (freed but kept inside the arenas), `mapped` (large blocks in their own mmap). RSS
    that grows while `in_use` stays flat is fragmentation, not a leak. None when not on glibc 2.33+."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks, "mapped": info.hblkhd}


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` for threads that start allocating from now on; False when not
    on glibc or refused."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return free heap memory to the system; True when some was (False too when not on glibc)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def freeze_startup_objects() -> int:
    """Exempt every object alive now from garbage collection (`gc.freeze`); returns how many. Once, when the
    process has loaded what it keeps for its whole life."""
    gc.collect()  # what startup left as garbage is freed, not frozen
    gc.freeze()
    return gc.get_freeze_count()


async def release_after_call() -> None:
    """Collect the call's garbage (on the loop: the collector holds the GIL anyway), then `trim()` on a worker
    thread; a failure is logged, never raised (the call is over either way)."""
    try:
        gc.collect()
        await asyncio.to_thread(trim)
    except Exception:
        log.exception("releasing a finished call's memory failed")
