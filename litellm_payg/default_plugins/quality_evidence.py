"""``quality_evidence``: the response validators' verdict on an answer is measured-quality evidence.

Through the same hook a third-party plugin would use (``payg_answer_checked``): every answer the
policy's ``validate:`` list checked is an observation of the metric ``valid`` (1 when it passed every
check, 0 when not) for its route, deployment and class. The plugin only says so, returning an
:class:`~litellm_payg.core.quality.Evidence`; the runtime records it (``runtime/answers.py``), and
only when the policy collects evidence (a ``quality:`` section or a measured ``quality_floor``).

A pick that ``quality_floor`` made to explore is charged to its route's exploration window by the
engine itself when it hands the pick to the ``payg_decision`` observers (``Engine.observe``), not
here: no hook implementation writes a store.
"""

from __future__ import annotations

from litellm_payg import hookimpl
from litellm_payg.core.quality import Evidence
from litellm_payg.policy.quality import VALIDATOR_METRIC


@hookimpl
def payg_answer_checked(problems, policy):
    if not getattr(policy, "validators", None):
        return None
    return Evidence(VALIDATOR_METRIC, not problems, source="validator")
