"""Voice pipeline glue: a pipecat transport over any `AudioLeg`, and what the caller heard.

- `leg.AudioLeg`: the subset of `telephony.call.CallLeg` this package uses (a Protocol, no import).
- `transport.LegTransport`: pipecat input/output processors over a leg (resampling, DTMF, barge-in).
- `playback.PlaybackTracker`: maps spoken text to the leg's playback position; `Heard` after barge-in.
- `fakes`: scripted STT/TTS services and an echo "LLM" implementing pipecat's interfaces, for tests.
"""

from pipeline.voice.leg import AudioLeg, Digit
from pipeline.voice.playback import Heard, PlaybackTracker, heard_prefix
from pipeline.voice.transport import (
    PIPELINE_SAMPLE_RATE,
    LegInputTransport,
    LegOutputTransport,
    LegTransport,
    StreamResampler,
    leg_transport_params,
)

__all__ = [
    "PIPELINE_SAMPLE_RATE",
    "AudioLeg",
    "Digit",
    "Heard",
    "LegInputTransport",
    "LegOutputTransport",
    "LegTransport",
    "PlaybackTracker",
    "StreamResampler",
    "heard_prefix",
    "leg_transport_params",
]
