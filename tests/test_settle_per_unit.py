"""Answers priced per unit (images, audio, searches) and embeddings are settled before the Router
call returns, like chat answers: not on LiteLLM's logging worker, which a script that exits right
after its last call never runs.

Each call type goes through LiteLLM's real client to a fake provider speaking its wire format
(``per_unit_provider.py``: images, transcription, moderation, Cohere rerank; ``billing_provider.py``:
embeddings, speech); the record is checked, with nothing awaited after the call, against LiteLLM's
own cost of the answer.
"""

from __future__ import annotations

import litellm
import pytest
from routing_helpers import attached

from billing_provider import BillingProvider
from per_unit_provider import AUDIO_SECONDS, PerUnitProvider

RESERVE = 0.5  # what a request whose cost the plugin cannot bound reserves here
KEY = {"api_key": "sk-test"}


@pytest.fixture
def providers():
    with PerUnitProvider() as per_unit, BillingProvider() as billing:
        yield per_unit, billing


def _model_list(per_unit: PerUnitProvider, billing: BillingProvider) -> list[dict]:
    def dep(group: str, model: str, base: str) -> dict:
        return {"model_name": group, "litellm_params": {"model": model, "api_base": base, **KEY},
                "model_info": {"id": f"{group}-dep"}}

    return [dep("image", "openai/dall-e-3", per_unit.url), dep("stt", "openai/whisper-1", per_unit.url),
            dep("moderation", "openai/omni-moderation-latest", per_unit.url),
            dep("rerank", "cohere/rerank-english-v3.0", per_unit.origin),
            dep("embedding", "openai/text-embedding-3-small", billing.url), dep("tts", "openai/tts-1", billing.url)]


CALLS = {
    "image": lambda r: r.aimage_generation(model="image", prompt="a lighthouse", size="1024x1024", quality="standard"),
    "transcription": lambda r: r.atranscription(model="stt", file=("a.wav", b"RIFF" + b"\0" * 100)),
    "moderation": lambda r: r.amoderation(model="moderation", input="hello"),
    "rerank": lambda r: r.arerank(model="rerank", query="which", documents=["one", "two"]),
    "embedding": lambda r: r.aembedding(model="embedding", input=["one two", "three"]),
    "speech": lambda r: r.aspeech(model="tts", input="hello world", voice="alloy"),
}


def _expected(call: str, billing: BillingProvider) -> float:
    """LiteLLM's price of the answer (the provider's bill where the fake bills)."""
    cost = litellm.model_cost
    return {
        "transcription": lambda: AUDIO_SECONDS * cost["whisper-1"]["input_cost_per_second"],
        "moderation": lambda: 0.0,  # free at OpenAI, and so for LiteLLM
        "rerank": lambda: cost["rerank-english-v3.0"]["input_cost_per_query"],
        "embedding": lambda: billing.bills[-1].usd,
        "speech": lambda: billing.bills[-1].usd,
    }[call]()


@pytest.mark.parametrize("call", list(CALLS))
async def test_a_per_unit_answer_is_settled_before_the_call_returns(tmp_path, providers, call):
    per_unit, billing = providers
    policy = {"version": 1, "ledger": f"sqlite:///{tmp_path}/ledger.db",
              "budgets": [{"scope": "global", "window": "day", "limit_usd": 10}],
              "requests": {"unbounded_reserve_usd": RESERVE}}
    with attached(_model_list(per_unit, billing), policy) as (router, engine):
        await CALLS[call](router)
        # nothing awaited since: LiteLLM's logging worker has not run
        assert engine.spend.ledger.open_reservations() == 0 and engine.spend.in_flight == 0
        (record,) = engine.spend.ledger.records()
    if call == "image":
        # LiteLLM 1.110.2 prices this answer nowhere (0 inline, None on its success log): the bound
        # it was reserved at, marked an estimate, not $0
        assert record.amount_usd == pytest.approx(RESERVE) and record.attrs.get("usage") == "estimated", record.attrs
    else:
        assert record.amount_usd == pytest.approx(_expected(call, billing), rel=1e-9), record.attrs
        assert "usage" not in record.attrs


@pytest.mark.parametrize("response_format", ["verbose_json", "text", "srt"])
async def test_a_transcription_names_its_response_format(tmp_path, providers, response_format):
    """Transcription (like speech and images) names its output format (``"verbose_json"``): the chat
    check that wants an object there refused it with a 400 naming ``response_format``."""
    per_unit, billing = providers
    policy = {"version": 1, "ledger": "memory://", "requests": {"unbounded_reserve_usd": RESERVE}}
    with attached(_model_list(per_unit, billing), policy) as (router, engine):
        await router.atranscription(model="stt", file=("a.wav", b"RIFF" + b"\0" * 100), response_format=response_format)
        assert engine.spend.ledger.open_reservations() == 0 and len(engine.spend.ledger.records()) == 1
