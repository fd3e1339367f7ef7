"""The text channels: chat sessions, the OpenAI-compatible completions endpoint and simulate.

    turns        one user turn: a fresh AgentBrain over the stored context, its events, record and bill
    sessions     chat session rows, the pinned agent, one turn at a time, 409 no_published_version
    completions  the OpenAI wire shapes (request as read, ChatCompletion, chunks)
    sse          SSE frames and a streaming response that always closes its producer (and heartbeats)
    streaming    the native stream's frames: one per event, then `done` or `error`
    views        the JSON of an answered turn

The routes are control_api/routes/{chat,completions,simulate}.py; the records they leave are
control_api/conversations.
"""
