"""A successful non-stream answer's checks, and the evidence they leave: written once, not in the adapter.

The adapter's response guard (``adapter/routing.py``) hands each such answer here. Every
``payg_validate_response`` implementation checks it; every ``payg_answer_checked`` implementation
then hears the verdict and may return :class:`~litellm_payg.core.quality.Evidence` about the
answer, which the engine's :class:`~litellm_payg.runtime.quality.QualityControl` records. The hooks
get values (the response, the request, the candidate, the policy) and return values; what is
written, is written here, the same for a built-in plugin (``default_plugins/quality_evidence.py``)
as for a third-party one. ``engine=`` is still passed for implementations written for it
(deprecated: no built-in takes it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.quality import Evidence


def check_answer(engine: Any, response: Any, request: RouteRequest, candidate: Candidate | None) -> list[str]:
    """The problems every ``payg_validate_response`` implementation found in ``response`` (empty:
    it passed), after telling the ``payg_answer_checked`` implementations and recording the
    evidence they return for ``candidate`` (not when the answering deployment is unknown)."""
    hook = engine.pm.hook
    results = hook.payg_validate_response(response=response, request=request, policy=engine.policy, engine=engine)
    problems = [p for found in results if found for p in found]
    if candidate is not None:
        said = hook.payg_answer_checked(request=request, candidate=candidate, problems=problems, policy=engine.policy,
                                        engine=engine)
        evidence = [item for found in said if found is not None for item in _items(found)]
        if evidence:
            engine.quality.record_answer(request, candidate, evidence)
    return problems


def _items(found: Any) -> Iterable[Any]:
    """What one implementation returned, as a sequence: one :class:`Evidence`, or several."""
    return (found,) if isinstance(found, Evidence) else found if isinstance(found, (list, tuple)) else (found,)
