"""The brain on the real local model (Qwen2.5-Coder-0.5B via llama.cpp), when it is installed here.

One knowledge question end to end: the passage the (fake) search returns must reach the answer. On an
idle 2-core machine loading the model and the first prefill take about five seconds; the model timeout is
generous so that a busy machine slows the test down rather than failing it.
"""

from __future__ import annotations

from pathlib import Path

from control_api.settings import default_data_dir
from pipeline.llm.model_assets import QWEN_CODER_05B_Q4KM, is_assembled, model_path
from runtime.brain import AgentBrain, BrainDeps
from tests.test_brain_support import KNOWLEDGE, FakeKnowledge, agent, chunk, message, of_type

DATA_DIR = default_data_dir()


def _model_ready(data_dir: Path) -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return is_assembled(model_path(data_dir), QWEN_CODER_05B_Q4KM)


def test_the_project_installed_the_local_model() -> None:
    # ./dev builds llama-cpp-python and joins the model; its absence is a failure, not a reason to skip.
    assert _model_ready(DATA_DIR), f"the local model is not assembled under {DATA_DIR}: run ./dev test"


async def test_a_knowledge_question_is_answered_from_the_passage() -> None:
    from pipeline.llm.local_provider import LocalLlamaProvider

    llm = LocalLlamaProvider.from_data_dir(DATA_DIR)
    search = FakeKnowledge([chunk("Tony's large supreme pizza costs $18.50. A medium supreme costs $14.", 0.83)])
    brain = AgentBrain(
        agent(knowledge=KNOWLEDGE.to_config()), BrainDeps(llm=llm, knowledge=search, llm_timeout_s=120),
        channel="chat", conversation_id="cnv_local", org_id="org_1",
    )
    events = [event async for event in brain.respond("How much is a large supreme pizza?")]
    assert of_type(events, "error") == []
    assert of_type(events, "kb_retrieval")[0].data["topScore"] == 0.83
    assert "18.50" in message(events)


async def test_a_misheard_statement_gets_a_reply_and_a_farewell_ends_the_call() -> None:
    # Whisper tiny.en heard espeak-ng's "Do you sell gluten free crust?" as "You fell through my free cry.",
    # and the model, whose routing table held no statement that is not a farewell, hung up on the caller.
    from pipeline.llm.local_provider import LocalLlamaProvider

    llm = LocalLlamaProvider.from_data_dir(DATA_DIR)
    no_transfer = {"warm": False, "transferDestination": None, "transferRules": []}
    deps = BrainDeps(llm=llm, llm_timeout_s=120)
    for said, ends in (("You fell through my free cry.", False), ("Okay thanks, bye.", True)):
        brain = AgentBrain(agent(handoffConfig=no_transfer), deps, channel="voice", conversation_id="cnv_end",
                           org_id="org_1")
        events = [event async for event in brain.respond(said)]
        assert of_type(events, "error") == []
        assert bool(of_type(events, "end")) is ends, (said, [(e.type, e.data) for e in events])
        assert message(events).strip()
