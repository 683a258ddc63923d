"""The price source port (``core/price_source.py``): the layers below the adapter price and count
through it, LiteLLM's implementation is the default, and asking with none installed is a clear error."""

from __future__ import annotations

import pytest

from litellm_payg.adapter.litellm_prices import LiteLLMPrices
from litellm_payg.core import price_source
from litellm_payg.core.errors import PaygError
from litellm_payg.stores.prices import candidate_from_deployment, count_prompt_tokens

DEPLOYMENT = {"model_name": "chat", "litellm_params": {"model": "gpt-4o-mini"}, "model_info": {"id": "mini"}}


@pytest.fixture
def no_source():
    """No price source installed and no default to load (as a process that never imported the root's)."""
    saved_installed, saved_default = price_source._installed, price_source._default
    price_source.install(None)
    price_source.set_default(None)
    try:
        yield
    finally:
        price_source._installed, price_source._default = saved_installed, saved_default


def test_the_default_source_is_litellms_price_map_and_token_counter():
    import litellm

    assert isinstance(price_source.price_source(), LiteLLMPrices)
    candidate = candidate_from_deployment(DEPLOYMENT, {})
    assert candidate.input_usd_per_token == litellm.model_cost["gpt-4o-mini"]["input_cost_per_token"]
    assert candidate.price_source == "litellm"
    messages = [{"role": "user", "content": "hello there"}]
    assert count_prompt_tokens("gpt-4o-mini", messages) == litellm.token_counter(model="gpt-4o-mini", messages=messages)


def test_asking_for_a_price_with_no_source_installed_says_how_to_install_one(no_source):
    with pytest.raises(price_source.NoPriceSource, match=r"no price source is installed: call "
                       r"litellm_payg\.core\.price_source\.install") as caught:
        candidate_from_deployment(DEPLOYMENT, {})
    assert isinstance(caught.value, PaygError)
    with pytest.raises(price_source.NoPriceSource):
        count_prompt_tokens("gpt-4o-mini", [{"role": "user", "content": "hi"}])


def test_a_default_that_cannot_be_imported_is_a_clear_error(no_source):
    def missing():
        raise ModuleNotFoundError("No module named 'litellm'")

    price_source.set_default(missing)
    with pytest.raises(price_source.NoPriceSource, match="cannot be loaded: No module named 'litellm'"):
        price_source.price_source()


def test_an_installed_source_is_what_the_stores_price_with(no_source):
    """Another host's price map: the stores ask it, not LiteLLM."""

    class Flat(LiteLLMPrices):
        def model_info(self, model, provider=None):
            return {"key": model, "max_input_tokens": 1000}

        def price_entry(self, key):
            return {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}

    price_source.install(Flat())
    candidate = candidate_from_deployment(DEPLOYMENT, {})
    assert (candidate.input_usd_per_token, candidate.output_usd_per_token) == (1e-6, 2e-6)
    assert candidate.max_input_tokens == 1000


def test_installing_something_that_is_not_a_source_is_refused(no_source):
    with pytest.raises(TypeError, match="object is not a PriceSource"):
        price_source.install(object())
