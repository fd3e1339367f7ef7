"""ITU-T G.711 μ-law (PCMU) and A-law (PCMA) with numpy lookup tables.

Decoding indexes a 256-entry int16 table with the code bytes; encoding indexes a 65536-entry uint8 table with
the int16 samples reinterpreted as uint16. Both tables are built once at import from the segment/quantisation
rules of G.711 (the same arithmetic as the widely used Sun Microsystems reference ``g711.c``):

* μ-law works on the 14 most significant bits, adds the bias 33, clips at 8159 and finds the segment among the
  ends ``0x3F, 0x7F, ... 0x1FFF``; the code is the inverted ``sign | segment << 4 | mantissa``.
* A-law works on the 13 most significant bits, the segment ends are ``0x1F, 0x3F, ... 0xFFF`` and the code is
  XORed with 0x55 (even bits inverted).

Silence encodes as 0xFF (μ-law) and 0xD5 (A-law). A 20 ms frame (160 samples) decodes or encodes in 2-3
microseconds; see ``benchmarks/media_kernels.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_ulaw_decode() -> NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_decode() -> NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 2  # index is the sample as uint16; arithmetic shift
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 0x21
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> np.minimum(shift, 8)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


ULAW_DECODE_TABLE: NDArray[np.int16] = _build_ulaw_decode()
ALAW_DECODE_TABLE: NDArray[np.int16] = _build_alaw_decode()
ULAW_ENCODE_TABLE: NDArray[np.uint8] = _build_ulaw_encode()
ALAW_ENCODE_TABLE: NDArray[np.uint8] = _build_alaw_encode()
for _table in (ULAW_DECODE_TABLE, ALAW_DECODE_TABLE, ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE):
    _table.setflags(write=False)


def ulaw_decode(payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    """μ-law bytes -> int16 PCM (one sample per byte)."""
    return ULAW_DECODE_TABLE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    """A-law bytes -> int16 PCM (one sample per byte)."""
    return ALAW_DECODE_TABLE[np.frombuffer(payload, dtype=np.uint8)]


def ulaw_encode(pcm: NDArray[np.int16]) -> bytes:
    """int16 PCM -> μ-law bytes."""
    return ULAW_ENCODE_TABLE[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(pcm: NDArray[np.int16]) -> bytes:
    """int16 PCM -> A-law bytes."""
    return ALAW_ENCODE_TABLE[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()
