"""Conversation records: every chat, API completion, simulation (and later every call) leaves one.

A conversation holds its transcript (`conversation_messages`: user and assistant text, plus the tool
traffic that rebuilds the model's context), its receipt (`conversation_events`: the stored
`runtime.events` in order, with timings) and, once it ends, a deterministic outcome and one-line summary.

    outcome      how it ended, from the receipt and how the channel closed (no LLM)
    repository   the SQL: create, record a turn, finish, read, search
    views        the JSON the API answers with
"""
