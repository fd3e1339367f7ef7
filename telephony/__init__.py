"""The network edge (SIP, SDP, RTP, codecs, DTMF). Knows nothing of agents or LLMs."""
