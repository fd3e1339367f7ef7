"""G.711 tables against the reference algorithm (Sun g711.c), written slowly here, over every input."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from telephony.codecs.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

SEG_UEND = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
SEG_AEND = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]


def _search(val: int, table: list[int]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def ref_linear2ulaw(pcm: int) -> int:
    pcm >>= 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + 0x21
    seg = _search(pcm, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask


def ref_ulaw2linear(u: int) -> int:
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return 0x84 - t if u & 0x80 else t - 0x84


def ref_linear2alaw(pcm: int) -> int:
    pcm >>= 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask, pcm = 0x55, -pcm - 1
    seg = _search(pcm, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0xF if seg < 2 else (pcm >> seg) & 0xF
    return aval ^ mask


def ref_alaw2linear(a: int) -> int:
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_reference_for_all_65536_samples() -> None:
    expected = bytes(ref_linear2ulaw(int(s)) for s in ALL_PCM)
    assert ulaw_encode(ALL_PCM) == expected


def test_alaw_encode_matches_reference_for_all_65536_samples() -> None:
    expected = bytes(ref_linear2alaw(int(s)) for s in ALL_PCM)
    assert alaw_encode(ALL_PCM) == expected


def test_ulaw_decode_matches_reference_for_all_256_codes() -> None:
    assert ulaw_decode(ALL_CODES).tolist() == [ref_ulaw2linear(c) for c in ALL_CODES]
    assert ulaw_decode(ALL_CODES).dtype == np.int16


def test_alaw_decode_matches_reference_for_all_256_codes() -> None:
    assert alaw_decode(ALL_CODES).tolist() == [ref_alaw2linear(c) for c in ALL_CODES]


def test_silence_bytes() -> None:
    silence = np.zeros(160, dtype=np.int16)
    assert ulaw_encode(silence) == bytes([ULAW_SILENCE]) * 160 == b"\xff" * 160
    assert alaw_encode(silence) == bytes([ALAW_SILENCE]) * 160 == b"\xd5" * 160
    assert ulaw_decode(b"\xff").tolist() == [0]
    assert alaw_decode(b"\xd5").tolist() == [8]


def test_codes_round_trip_through_decode_then_encode() -> None:
    # Every code except μ-law's negative zero (0x7F, which decodes to 0 and re-encodes as 0xFF) is a fixed point.
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    assert [i for i in range(256) if again[i] != i] == [0x7F]


@given(st.binary(min_size=0, max_size=400))
def test_decode_accepts_any_payload(payload: bytes) -> None:
    assert len(ulaw_decode(payload)) == len(payload) == len(alaw_decode(payload))
