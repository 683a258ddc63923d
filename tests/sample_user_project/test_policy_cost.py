"""Would policy v2 have cost less than v1 on last week's recorded traffic? Answered offline.

Run: pytest tests/sample_user_project -c tests/sample_user_project/pytest.ini (the plugin loads by
itself: installing litellm-payg registers its ``pytest11`` entry point).
"""

from pathlib import Path

import pytest

from litellm_payg.tools.testing import assert_routed_to

HERE = Path(__file__).parent
CASSETTES = HERE / "cassettes"
CONFIG = HERE / "config.yaml"


def test_v2_costs_less_than_v1_on_recorded_traffic(payg_replay):
    v1 = payg_replay(CASSETTES, policy=HERE / "policy_v1.yaml", config=CONFIG)
    v2 = payg_replay(CASSETTES, policy=HERE / "policy_v2.yaml", config=CONFIG)

    assert len(v1.rows) == len(v2.rows) == 4 and not v1.errors and not v2.errors
    assert_routed_to(v1, "mistral/mistral-large-latest")
    assert_routed_to(v2, "deepseek")  # a deployment id works too
    assert all(row.exact for row in v1.rows + v2.rows)  # each request was recorded on both deployments

    assert 0 < v2.spend() < v1.spend()
    assert v2.spend(scope="provider:deepseek") == v2.spend()
    assert v1.spend(scope="provider:deepseek") == 0
    assert v1.spend(scope="model:mistral/mistral-large-latest") == v1.spend()


ORDER_1042 = [{"role": "user", "content": "Where is my order 1042? It was due on Monday."}]  # recorded


@pytest.mark.payg_policy(HERE / "policy_v2.yaml")
@pytest.mark.payg_config(CONFIG)
def test_live_router_under_v2(payg_router, payg_spend, payg_cassette):
    with payg_cassette(CASSETTES):
        response = payg_router.completion(model="chat", messages=ORDER_1042, max_tokens=64, user="alice")
    assert_routed_to(response, "deepseek/deepseek-chat")
    assert response.choices[0].message.content.startswith("Your order 1042 ships today")  # its own answer
    assert payg_spend(scope="provider:deepseek") == payg_spend() > 0


@pytest.mark.payg_policy(HERE / "policy_v2.yaml")
@pytest.mark.payg_config(CONFIG)
def test_an_unrecorded_prompt_fails_naming_the_closest_recording(payg_router, payg_cassette):
    # A prompt nobody recorded is not answered with another prompt's recording: the error names the
    # closest recording (file#index) and the field that differs.
    with payg_cassette(CASSETTES), pytest.raises(Exception) as failed:
        payg_router.completion(model="chat", messages=[{"role": "user", "content": "Where is my order 1042?"}],
                               max_tokens=64, user="alice")
    message = str(failed.value)
    assert 'messages[0].content: sent "Where is my order 1042?", recorded "Where is my order 1042? It was due on ' \
           'Monday." (recording support-week-01.yaml#0)' in message


@pytest.mark.payg_policy(HERE / "policy_v2.yaml")
@pytest.mark.payg_config(CONFIG)
def test_endpoint_matching_is_an_explicit_choice(payg_router, payg_cassette):
    # match_on="endpoint": any recording of the provider endpoint answers (here: the first deepseek one).
    with payg_cassette(CASSETTES, match_on="endpoint"):
        response = payg_router.completion(model="chat", messages=[{"role": "user", "content": "Hi?"}], max_tokens=5)
    assert_routed_to(response, "deepseek")
