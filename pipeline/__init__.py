"""Audio/text in, audio/text out. Knows nothing of SIP or databases."""
