"""Shared helpers for the tests that govern a Router whose deployments are the local stand-in
provider (``standin``): one model per provider, the deployment and policy they use, the
price each deployment is charged at. (The ledger backends a spend test runs on: ``services.py``.)"""

from __future__ import annotations

from typing import Any

import litellm

from standin import StandIn

#: the deployment under test per stand-in provider
STANDIN_MODELS = {
    "openai": "openai/gpt-4o-mini",
    "deepseek": "deepseek/deepseek-chat",
    "mistral": "mistral/mistral-small-latest",
    "groq": "groq/openai/gpt-oss-120b",
    "openrouter": "openrouter/openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
}
OPENAI_STYLE = ["openai", "deepseek", "mistral", "groq", "openrouter"]
# a deployment's own price, different from LiteLLM's bundled one for every model above
OWN_PRICE = {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.1e-05}
# LiteLLM's bundled price map has no OpenRouter models: that deployment carries its own price
DEPLOYMENT_PRICE = {"openrouter": OWN_PRICE}
ROUTER = {"num_retries": 0, "disable_cooldowns": True}


def standin_deployment(s: StandIn, provider: str, dep_id: str = "d1", group: str = "chat", **params: Any) -> dict:
    params = {**DEPLOYMENT_PRICE.get(provider, {}), **params}
    return {
        "model_name": group,
        "litellm_params": {"model": STANDIN_MODELS[provider], "api_key": "sk-test", "api_base": s.url(provider), **params},
        "model_info": {"id": dep_id},
    }


def governed_policy(ledger: str = "memory://", **extra: Any) -> dict:
    """Every stand-in model governed (reserve, settle, record) by a rule that keeps them all."""
    return {"version": 1, "ledger": ledger, "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
            "models": {model: {"quality": 1} for model in STANDIN_MODELS.values()}} | extra


def deployment_price(provider: str) -> tuple[float, float]:
    """The deployment's price per token (input, output): its own, else LiteLLM's bundled one."""
    model = STANDIN_MODELS[provider]
    info = DEPLOYMENT_PRICE.get(provider) or litellm.model_cost.get(model) or litellm.model_cost[model.split("/", 1)[1]]
    return info["input_cost_per_token"], info["output_cost_per_token"]


