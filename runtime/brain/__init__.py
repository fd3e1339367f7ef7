"""The brain: a text-in, events-out conversation with one compiled agent, shared by chat and voice.

    brain.py         AgentBrain.respond(user_text) -> receipt events (runtime/events.py)
    deps.py          BrainDeps: the model, knowledge search, gap recorder, HTTP client factory, clock
    prompt.py        the agent compiled into a byte-stable system prompt (pure)
    tools.py         the tools offered to the model, and where transfers go (pure)
    dispatch.py      one tool call: guardrails, executor, events
    executors.py     http_webhook, geo, take_message I/O
    guardrails.py    the enforced rules (pure); verification.py: the caller-verification state machine
    retrieval.py     per-turn knowledge search and gaps; geo.py: offline locations; text.py: word rules
"""

from runtime.brain.brain import AgentBrain
from runtime.brain.deps import BrainDeps

__all__ = ["AgentBrain", "BrainDeps"]
