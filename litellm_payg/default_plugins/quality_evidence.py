"""``quality_evidence``: turn what the plugin sees into measured-quality evidence.

Two built-in sources, through the same hooks a third-party plugin would use:

* every answer the response validators checked (``payg_answer_checked``) is an observation of the
  metric ``valid`` (1 when it passed every check, 0 when not) for its route, deployment and class,
  when the policy has a ``validate:`` list and a ``quality:`` section or a measured ``quality_floor``;
* a pick that ``quality_floor`` made to explore (``decision.attrs["quality_explore"]``) charges its
  estimated cost to the route's exploration window (``payg_decision``).

A store that cannot be written is logged, never raised: evidence is worth less than the request.
"""

from __future__ import annotations

import logging

from litellm_payg import hookimpl
from litellm_payg.hook_chain import silent_when
from litellm_payg.policy.quality import VALIDATOR_METRIC

logger = logging.getLogger("litellm_payg")


@hookimpl
def payg_answer_checked(request, candidate, problems, engine):
    if not getattr(engine.policy, "validators", None) or not engine.quality.collecting:
        return
    quality = engine.quality
    try:
        quality.record(candidate.group, candidate.deployment_id, VALIDATOR_METRIC, not problems,
                       cls=quality.class_of(request), model=candidate.model, source="validator",
                       trace_id=request.trace_id)
    except Exception as exc:  # noqa: BLE001 - evidence must never fail a request
        logger.warning("litellm-payg quality: could not record validator evidence: %s", exc)


def _explored(decision) -> str | None:
    return decision.attrs.get("quality_explore") if decision.attrs else None


@hookimpl
@silent_when(lambda kwargs: _explored(kwargs["decision"]) is None)
def payg_decision(request, decision, engine):
    explored = _explored(decision)
    chosen = decision.chosen
    if explored is None or engine is None or chosen is None or chosen.deployment_id != explored or not chosen.priced:
        return
    try:
        engine.quality.charge_exploration(chosen.group, chosen.estimate_usd(request.prompt_tokens, request.output_tokens))
    except Exception as exc:  # noqa: BLE001 - must not raise on the request path
        logger.warning("litellm-payg quality: could not charge exploration: %s", exc)
