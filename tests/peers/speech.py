"""Caller media for the peer tests: espeak-ng speech as PCM, WAV files, and RTP pcaps for SIPp.

* ``speech_pcm(text)`` runs ``espeak-ng --stdout`` and resamples with ``sox`` to 8 kHz mono int16; the
  result is cached per (text, rate) under ``$TMPDIR/flowyte-peer-speech`` (espeak-ng is deterministic).
* ``write_rtp_pcap`` / ``rtp_dtmf_pcap`` write libpcap files that SIPp's ``<exec play_pcap_audio=...>``
  replays. SIPp 3.6.1 (``src/prepare_pcap.c``) accepts the link types EN10MB, LINUX_SLL and 802.11 only
  (raw-IP pcaps arrived in 2024, after 3.6.1), so the packets are Ethernet/IPv4/UDP. SIPp keeps the RTP
  bytes as they are, paces them by the pcap timestamps and rewrites only the UDP ports: it sends from its
  media port plus ``(dport - lowest dport in the file)`` to the remote SDP port plus the same offset, so
  the addresses written here matter only relative to each other.
* SIPp 3.6.1 also has ``<exec play_dtmf="123"/>``, but it hard-codes payload type 96 and SSRC 0x01020304;
  the Debian package ships one pcap per digit in ``/usr/share/sip-tester/dtmf_2833_*.pcap`` (PT 101).
  ``rtp_dtmf_pcap`` builds any digit string on any payload type from ``telephony.rtp.dtmf.dtmf_packets``.
* ``read_udp_pcap`` reads any of those files back (EN10MB, RAW, LINUX_SLL) for the tests' own checks.

Audio is encoded with the product's own ``telephony.codecs.g711`` tables and packets are serialized by
``telephony.rtp.packet.RtpPacket``, so these files are also a check of those modules against real peers.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from telephony.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from telephony.rtp.dtmf import dtmf_packets
from telephony.rtp.packet import RtpPacket
from telephony.rtp.seq import seq_add
from tests.peers import require_binary

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "Codec",
    "UdpRecord",
    "decode_rtp_audio",
    "pad",
    "read_udp_pcap",
    "read_wav",
    "rtp_audio_packets",
    "rtp_dtmf_pcap",
    "speech_pcm",
    "write_rtp_pcap",
    "write_udp_pcap",
    "write_wav",
]

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
PTIME = 0.020
Codec = Literal["PCMU", "PCMA"]
Address = tuple[str, int]

_STATIC_PT: dict[str, int] = {"PCMU": 0, "PCMA": 8}
_CACHE_DIR = Path(tempfile.gettempdir()) / "flowyte-peer-speech"

# libpcap file format: global header, then a record header before each packet (host byte order; we
# write little-endian with the microsecond magic).
_PCAP_MAGIC = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
_ETHERNET = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_UDP = 17


# ---------------------------------------------------------------------------------------------- speech


def speech_pcm(text: str, rate: int = SAMPLE_RATE, *, voice: str = "en-us") -> NDArray[np.int16]:
    """``text`` spoken by espeak-ng's ``voice`` as mono int16 PCM at ``rate`` Hz (cached per text, voice, rate)."""
    name = f"{rate}\0{text}" if voice == "en-us" else f"{rate}\0{voice}\0{text}"  # English: the keys cached so far
    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    cached = _CACHE_DIR / f"{key}.s16"
    if not cached.exists():
        espeak, sox = require_binary("espeak-ng"), require_binary("sox")
        wav = subprocess.run([espeak, "--stdout", "-v", voice, text], check=True, capture_output=True).stdout
        to_raw = ["-t", "raw", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-"]
        raw = subprocess.run(
            [sox, "-t", "wav", "-", *to_raw],
            input=wav,
            check=True,
            capture_output=True,
        ).stdout
        if not raw:
            raise RuntimeError(f"espeak-ng/sox produced no audio for {text!r}")
        _CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(raw)
        tmp.replace(cached)  # atomic: parallel test workers never see half a file
    return np.frombuffer(cached.read_bytes(), dtype="<i2").astype(np.int16)


def pad(pcm: NDArray[np.int16], before_s: float, after_s: float, rate: int = SAMPLE_RATE) -> NDArray[np.int16]:
    """``pcm`` with ``before_s`` and ``after_s`` seconds of digital silence around it."""
    before, after = np.zeros(round(before_s * rate), np.int16), np.zeros(round(after_s * rate), np.int16)
    return np.concatenate([before, np.asarray(pcm, np.int16), after])


def write_wav(path: str | os.PathLike[str], pcm: NDArray[np.int16], rate: int = SAMPLE_RATE) -> None:
    """Mono 16-bit little-endian WAV."""
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def read_wav(path: str | os.PathLike[str]) -> tuple[NDArray[np.int16], int]:
    """A 16-bit WAV as (mono int16 PCM, rate); multi-channel files are reduced to their first channel."""
    with wave.open(os.fspath(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * src.getsampwidth()}-bit WAV, expected 16-bit")
        frames = np.frombuffer(src.readframes(src.getnframes()), dtype="<i2").astype(np.int16)
        return frames[:: src.getnchannels()].copy(), src.getframerate()


# ------------------------------------------------------------------------------------------------- RTP


def _encode(pcm: NDArray[np.int16], codec: Codec) -> bytes:
    return ulaw_encode(pcm) if codec == "PCMU" else alaw_encode(pcm)


def rtp_audio_packets(
    pcm8k: NDArray[np.int16],
    *,
    codec: Codec = "PCMU",
    payload_type: int | None = None,
    ssrc: int = 0x5EED5EED,
    first_sequence: int = 1000,
    first_timestamp: int = 160_000,
) -> list[RtpPacket]:
    """20 ms G.711 packets of ``pcm8k`` (the last frame padded with silence); marker on the first."""
    pt = _STATIC_PT[codec] if payload_type is None else payload_type
    pcm = np.asarray(pcm8k, np.int16)
    frames = -(-len(pcm) // FRAME_SAMPLES)
    padded = np.zeros(frames * FRAME_SAMPLES, np.int16)
    padded[: len(pcm)] = pcm
    payload = _encode(padded, codec)
    return [
        RtpPacket(
            payload_type=pt,
            sequence_number=seq_add(first_sequence, i),
            timestamp=(first_timestamp + i * FRAME_SAMPLES) % (1 << 32),
            ssrc=ssrc,
            marker=i == 0,
            payload=payload[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES],
        )
        for i in range(frames)
    ]


def decode_rtp_audio(packets: Iterable[RtpPacket], codec: Codec = "PCMU") -> NDArray[np.int16]:
    """The concatenated, decoded payloads of ``packets`` in the order given."""
    payload = b"".join(p.payload for p in packets)
    return ulaw_decode(payload) if codec == "PCMU" else alaw_decode(payload)


# ------------------------------------------------------------------------------------------------ pcap


@dataclass(frozen=True)
class UdpRecord:
    time: float  # seconds (pcap record timestamp)
    src: Address
    dst: Address
    payload: bytes


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(record: UdpRecord, ident: int) -> bytes:
    udp = _UDP.pack(record.src[1], record.dst[1], _UDP.size + len(record.payload), 0) + record.payload
    src, dst = bytes(map(int, record.src[0].split("."))), bytes(map(int, record.dst[0].split(".")))
    ip = _IPV4.pack(0x45, 0, _IPV4.size + len(udp), ident & 0xFFFF, 0x4000, 64, _IPPROTO_UDP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    ether = _ETHERNET.pack(b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01", _ETHERTYPE_IPV4)
    return ether + ip + udp


def write_udp_pcap(path: str | os.PathLike[str], records: Iterable[UdpRecord]) -> int:
    """Ethernet/IPv4/UDP libpcap file (microsecond timestamps); returns the number of packets written."""
    count = 0
    with open(path, "wb") as out:
        out.write(_PCAP_HEADER.pack(_PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for count, record in enumerate(records, start=1):
            frame = _frame(record, count)
            micros = round(record.time * 1_000_000)
            out.write(_PCAP_RECORD.pack(micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
            out.write(frame)
    return count


def _parse_frame(frame: bytes, linktype: int) -> tuple[Address, Address, bytes] | None:
    if linktype == LINKTYPE_ETHERNET:
        offset = 12
    elif linktype == LINKTYPE_LINUX_SLL:
        offset = 14
    elif linktype == LINKTYPE_RAW:
        offset = -2
    else:
        raise ValueError(f"unsupported pcap link type {linktype}")
    if offset >= 0:
        (ethertype,) = struct.unpack_from("!H", frame, offset)
        if ethertype == 0x8100:  # 802.1Q tag
            offset += 4
            (ethertype,) = struct.unpack_from("!H", frame, offset)
        if ethertype != _ETHERTYPE_IPV4:
            return None
    ip = frame[offset + 2 :]
    if len(ip) < _IPV4.size or ip[0] >> 4 != 4 or ip[9] != _IPPROTO_UDP:
        return None
    ihl = (ip[0] & 0x0F) * 4
    sport, dport, length, _ = _UDP.unpack_from(ip, ihl)
    src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    return (src, sport), (dst, dport), ip[ihl + _UDP.size : ihl + length]


def read_udp_pcap(path: str | os.PathLike[str]) -> list[UdpRecord]:
    """The IPv4/UDP packets of a libpcap file (either byte order, µs or ns timestamps)."""
    data = Path(path).read_bytes()
    if len(data) < _PCAP_HEADER.size:
        raise ValueError(f"{path}: too short for a pcap header")
    (magic,) = struct.unpack_from("<I", data)
    endian = "<" if magic in (_PCAP_MAGIC, _PCAP_MAGIC_NS) else ">"
    magic, *_, linktype = struct.unpack_from(endian + "IHHiIII", data)
    if magic not in (_PCAP_MAGIC, _PCAP_MAGIC_NS):
        raise ValueError(f"{path}: not a libpcap file (magic {magic:#x})")
    scale = 1e-9 if magic == _PCAP_MAGIC_NS else 1e-6
    out: list[UdpRecord] = []
    pos = _PCAP_HEADER.size
    while pos + _PCAP_RECORD.size <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(endian + "IIII", data, pos)
        pos += _PCAP_RECORD.size
        parsed = _parse_frame(data[pos : pos + caplen], linktype)
        pos += caplen
        if parsed is not None:
            out.append(UdpRecord(sec + frac * scale, *parsed))
    return out


def write_rtp_pcap(
    path: str | os.PathLike[str],
    pcm8k: NDArray[np.int16],
    payload_type: int | None = None,
    codec: Codec = "PCMU",
    ssrc: int = 0x5EED5EED,
    src: Address = ("127.0.0.1", 40000),
    dst: Address = ("127.0.0.1", 6000),
    *,
    first_sequence: int = 1000,
    first_timestamp: int = 160_000,
    start_time: float = 1_700_000_000.0,
) -> float:
    """A pcap of ``pcm8k`` as 20 ms G.711 RTP packets from ``src`` to ``dst``, 20 ms apart; returns the
    audio duration in seconds (what a scenario should pause for)."""
    packets = rtp_audio_packets(
        pcm8k,
        codec=codec,
        payload_type=payload_type,
        ssrc=ssrc,
        first_sequence=first_sequence,
        first_timestamp=first_timestamp,
    )
    write_udp_pcap(path, (UdpRecord(start_time + i * PTIME, src, dst, bytes(p)) for i, p in enumerate(packets)))
    return len(packets) * PTIME


def rtp_dtmf_pcap(
    path: str | os.PathLike[str],
    digits: Sequence[str],
    *,
    payload_type: int = 101,
    ssrc: int = 0xD7F0D7F0,
    src: Address = ("127.0.0.1", 40000),
    dst: Address = ("127.0.0.1", 6000),
    duration_ms: int = 100,
    gap_ms: int = 200,
    lead_in_ms: int = 200,
    first_sequence: int = 2000,
    first_timestamp: int = 320_000,
    start_time: float = 1_700_000_000.0,
) -> float:
    """A pcap of RFC 4733 telephone events for ``digits`` (built by ``telephony.rtp.dtmf.dtmf_packets``:
    marker on each start, updates, three E-bit ends) with ``gap_ms`` of nothing between key presses;
    returns the duration in seconds. SIPp sends the first record at once and paces the rest by their
    pcap times, so ``lead_in_ms`` only offsets the RTP timestamps; delay the ``<exec>`` to wait longer."""
    records: list[UdpRecord] = []
    at_ms = lead_in_ms
    seq = first_sequence
    for digit in digits:
        scheduled = dtmf_packets(
            digit,
            payload_type=payload_type,
            ssrc=ssrc,
            first_sequence=seq,
            timestamp=(first_timestamp + at_ms * SAMPLE_RATE // 1000) % (1 << 32),
            duration_ms=duration_ms,
        )
        for item in scheduled:
            records.append(UdpRecord(start_time + at_ms / 1000 + item.offset, src, dst, bytes(item.packet)))
        seq = seq_add(seq, len(scheduled))
        at_ms += round(scheduled[-1].offset * 1000) + gap_ms
    write_udp_pcap(path, records)
    return at_ms / 1000
