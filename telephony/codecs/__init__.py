"""Audio codecs and sample-rate conversion for the media path (numpy only, no per-sample Python loops)."""

from telephony.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from telephony.codecs.resample import StreamingResampler

__all__ = ["StreamingResampler", "alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]
