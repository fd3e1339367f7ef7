"""Native memory between calls: hand what a finished call freed back to the system (glibc only).

A call's memory is mostly native: onnxruntime (Silero, Smart Turn, Piper), CTranslate2 (Whisper) and
llama.cpp allocate from their own worker threads, and glibc's allocator gives each allocating thread an
arena of its own (up to eight per core). What a call frees stays in those arenas, scattered among chunks
still in use, so the process's RSS creeps up call after call although nothing leaks: the soak in
benchmarks/voice_latency.py saw ~90 MB per call-hour with under 2 KB of Python objects per call.

`limit_arenas()` caps the arenas (`mallopt(M_ARENA_MAX)`), so freed chunks are found again by the next
call's threads instead of sitting in an arena nobody uses; call it before the models start their threads.
`trim()` (`malloc_trim(0)`) returns the free pages inside every arena to the system; it walks the heaps, a
few milliseconds, so it runs off the event loop after each call (`trim_after_call`).

Elsewhere (musl, macOS) both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
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


async def trim_after_call() -> None:
    """`trim()` on a worker thread; a failure is logged, never raised (the call is over either way)."""
    try:
        await asyncio.to_thread(trim)
    except Exception:
        log.exception("returning freed memory to the system failed")
