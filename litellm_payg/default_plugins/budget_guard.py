"""Budget headroom as a candidate filter: deployments under an exhausted ``downgrade`` budget are
dropped with the reason, so the request goes to what remains (e.g. DeepSeek's daily cap is spent:
Mistral serves). It reads the budgets' usage from the decision's snapshot (``headroom.py``), never
the ledger. Reservation (``spend.py``) remains the authority under concurrency; this plugin is
what makes the decision, the logs and ``explain`` say why."""

from __future__ import annotations

from litellm_payg import hookimpl
from litellm_payg.hook_chain import silent_when
from litellm_payg.core.headroom import headroom


@hookimpl(trylast=True)
@silent_when(lambda kwargs: not kwargs["snapshot"].usage or not kwargs["candidates"])  # what ``headroom`` returns None for first
def payg_filter_candidates(request, candidates, snapshot):
    return headroom(request, candidates, snapshot)
