"""Offline speech models: Whisper STT, Piper TTS, Silero VAD, Smart Turn. Knows nothing of SIP or databases."""
