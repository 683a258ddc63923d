"""Which candidates LiteLLM's own checks would let serve a request: the step before any rule.

Why: the adapter's filter narrows a group to one deployment, and in LiteLLM 1.110 its Router runs
its own checks *after* the filter callbacks, on what they left: the context window
(``enable_pre_call_checks``), tag routing, ``allowed_model_region``, vision, ``order``. A pick
those checks refuse turns a request LiteLLM alone would serve into an error ("No models have
context window large enough", "Not allowed to access model due to tags configuration"). So the
plugin applies the same checks first, and a rule's ``otherwise``, the quality order and the
failover order then move on among deployments LiteLLM accepts.

Every check is skipped when it would drop *every* candidate: LiteLLM then refuses the request
itself, with its own error (or, for vision and checks it does not enforce, serves it anyway), as
it would without the plugin. The drops name the check (``by: "litellm"``), so ``explain`` and the
``payg_decision`` stamp say why a deployment was not picked.

What the request needs (:class:`Needs`) is read by the adapter from the request as LiteLLM reads
it; what each deployment offers is on its :class:`Candidate`, worked out once at bind time. Pure:
no LiteLLM here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from litellm_payg.core.decision import Candidate, Drop, RouteRequest, Step

BY = "litellm"


@dataclass(frozen=True, slots=True)
class Needs:
    """What LiteLLM's checks ask of a deployment for one request, besides room for its prompt."""

    #: the request carries image content (LiteLLM's ``request_contains_image_content``)
    image: bool = False
    #: ``allowed_model_region``, when the Router's pre-call checks compare it to ``region_name``
    region: str | None = None
    #: the ``order`` level an order fallback hop targets (LiteLLM's ``_target_order``)
    target_order: int | None = None
    #: the deployment ids LiteLLM's tag routing keeps for this request; None: no tag routing
    tag_kept: frozenset[str] | None = None
    #: why tag routing dropped the others (LiteLLM's setting and the request's tags)
    tag_reason: str = ""
    #: under ``usage-based-routing-v2``: deployment id -> (requests, tokens) LiteLLM counted for it this
    #: minute and its (rpm, tpm) limits, for the deployments that have a limit
    usage: Mapping[str, tuple[int, int, float, float]] | None = None
    #: LiteLLM < 1.109 with ``enable_pre_call_checks`` (not usage-based-routing-v2): deployment id ->
    #: (requests LiteLLM counted for it, its ``litellm_params.rpm``), for the deployments with an rpm
    precall_requests: Mapping[str, tuple[int, int]] | None = None


def _window_differs(candidates: Sequence[Candidate]) -> int | None:
    """The smallest context window among ``candidates`` when some candidate can take a longer
    prompt than another (only then can the check keep some and drop others), else None."""
    smallest: int | None = None
    uneven = False
    for c in candidates:
        w = c.litellm_max_input_tokens
        if w is None:
            uneven = True
        elif smallest is None:
            smallest = w
        elif w != smallest:
            uneven = True
            smallest = min(smallest, w)
    return smallest if uneven else None


def _over_limits(request: RouteRequest, usage: Mapping[str, tuple[int, int, float, float]],
                 current: Sequence[Candidate], apply) -> None:
    """LiteLLM's ``usage-based-routing-v2`` selection (``_return_potential_deployments``): a
    deployment is passed over when this minute's requests + 1 reach its rpm, or its tokens plus
    this prompt's exceed its tpm. The prompt is counted only when its byte bound could tip a tpm."""
    tokens: int | None = None

    def over(c: Candidate) -> str | None:
        nonlocal tokens
        counted = usage.get(c.deployment_id)
        if counted is None:
            return None
        requests, used, rpm, tpm = counted
        if requests + 1 >= rpm:
            return f"rpm: {requests} requests this minute, limit {rpm:g} (LiteLLM's usage-based routing passes it over)"
        if used < tpm:
            bound = request.prompt_tokens if request.prompt_counted else request.prompt_tokens_at_most
            if bound is not None and used + bound <= tpm:
                return None
            if tokens is None:
                tokens = request.prompt_tokens
            if used + tokens <= tpm:
                return None
        return f"tpm: {used} tokens this minute + this prompt's exceed its limit {tpm:g} (LiteLLM's usage-based routing passes it over)"

    reasons = {c.deployment_id: over(c) for c in current}
    apply([c for c in current if reasons[c.deployment_id] is None], lambda c: reasons[c.deployment_id],
          "every deployment is over its rpm/tpm: left to LiteLLM, which refuses the request")


def _needs_nothing(request: RouteRequest, candidates: Sequence[Candidate]) -> bool:
    """Whether a request needing nothing but room for its prompt is kept by every check below
    without any drop: one ``order`` among the candidates, and either one context window for all,
    or a prompt (or its bound, read as the window check reads it) within the smallest window (a
    group of models with different windows takes that path on every decision)."""
    if not candidates:
        return True
    one_order, smallest = _window_facts(candidates)
    if not one_order:
        return False
    if smallest is None:
        return True
    bound = request.prompt_tokens if request.prompt_counted else request.prompt_tokens_at_most
    return bound is not None and bound <= smallest


def _window_facts(candidates: Sequence[Candidate]) -> tuple[bool, int | None]:
    """``(one order among the candidates, the smallest context window when the windows differ,
    else None)``: the window facts are :func:`_window_differs`'s. Remembered by the candidates'
    identities (frozen ``Candidate`` s only, the list kept so no identity is reused while it is
    here; bounded): a group's candidates are the same objects on every decision."""
    key = tuple(map(id, candidates))
    found = _FACTS.get(key)
    if found is not None:
        return found[1], found[2]
    first = candidates[0]
    order, window = first.order, first.litellm_max_input_tokens
    one_order = True
    same = True  # every window is the first's
    for c in candidates:
        if c.order != order:
            one_order = False
        if c.litellm_max_input_tokens != window:
            same = False
    smallest = None if same else _window_differs(candidates)
    if all(type(c) is Candidate for c in candidates):
        if len(_FACTS) >= 10_000:
            _FACTS.clear()
        _FACTS[key] = (tuple(candidates), one_order, smallest)
    return one_order, smallest


_FACTS: dict[tuple[int, ...], tuple[tuple[Candidate, ...], bool, int | None]] = {}


def feasible(request: RouteRequest, candidates: Sequence[Candidate]) -> Step | None:
    """The candidates LiteLLM's checks accept for ``request``, or None when all of them are (the
    usual case, decided without counting the prompt)."""
    needs: Needs | None = request.needs
    if needs is None and _needs_nothing(request, candidates):
        return None  # one window and order, or windows differ but this prompt fits the smallest
    current = list(candidates)
    dropped: list[Drop] = []
    notes: list[str] = []

    def apply(kept: list[Candidate], why, skipped_note: str) -> None:
        nonlocal current
        if len(kept) == len(current):
            return
        if not kept:
            notes.append(skipped_note)
            return
        keep = {id(c) for c in kept}
        dropped.extend(Step.drop(c, why(c), BY) for c in current if id(c) not in keep)
        current = kept

    if needs is not None:
        if needs.tag_kept is not None:
            apply([c for c in current if c.deployment_id in needs.tag_kept],
                  lambda c: f"tag routing: {needs.tag_reason or 'the request tags do not route here'}",
                  "tag routing keeps no deployment: left to LiteLLM, which refuses the request")
        if needs.region is not None:
            apply([c for c in current if c.region == needs.region],
                  lambda c: f"region {c.region!r} is not the request's allowed_model_region {needs.region!r}",
                  "no deployment is in the request's allowed_model_region: left to LiteLLM, which refuses it")
        if needs.image:
            apply([c for c in current if not c.no_vision],
                  lambda c: "the request has image content and the deployment does not support vision",
                  "no deployment supports vision: left to LiteLLM")

    if needs is not None and needs.usage:
        _over_limits(request, needs.usage, current, apply)
    if needs is not None and needs.precall_requests:
        counted = needs.precall_requests

        def at_rpm(c: Candidate) -> bool:
            found = counted.get(c.deployment_id)
            return found is not None and found[1] <= found[0]

        apply([c for c in current if not at_rpm(c)],
              lambda c: (f"rpm: {counted[c.deployment_id][0]} requests counted, limit {counted[c.deployment_id][1]} "
                         "(LiteLLM's pre-call check passes it over)"),
              "every deployment is at its rpm: left to LiteLLM, which refuses the request")

    smallest = _window_differs(current)
    if smallest is not None:
        bound = request.prompt_tokens if request.prompt_counted else request.prompt_tokens_at_most
        if bound is None or bound > smallest:
            tokens = request.prompt_tokens
            apply([c for c in current if c.litellm_max_input_tokens is None or tokens <= c.litellm_max_input_tokens],
                  lambda c: (f"context window: the prompt has {tokens} tokens, the deployment takes at most "
                             f"{c.litellm_max_input_tokens} (LiteLLM's pre-call check refuses it)"),
                  f"the prompt ({tokens} tokens) fits no deployment's context window: left to LiteLLM, which refuses it")

    first = current[0].order if current else None
    uneven = False
    for c in current:
        if c.order != first:
            uneven = True
            break
    if uneven or (needs is not None and needs.target_order is not None and first != needs.target_order):
        orders = {c.order for c in current}
        target = needs.target_order if needs is not None and needs.target_order is not None else None
        if target is None:
            ranked = [o for o in orders if o is not None]
            target = min(ranked) if ranked else None
        apply([c for c in current if c.order == target],
              lambda c: f"order {c.order}: LiteLLM sends this request to order {target} first",
              f"no deployment has order {target}: left to LiteLLM")

    if not dropped and not notes:
        return None
    return Step(current, dropped, "; ".join(notes) or None)
