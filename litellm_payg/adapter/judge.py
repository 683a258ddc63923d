"""A judged sample: evidence about a candidate nobody is sending traffic to yet.

With ``quality.judge`` in the policy, a share of the answered (non-stream) requests on a route whose
``quality_floor`` is ``measured`` is, off the caller's path (from LiteLLM's success log, on its
logging worker), also sent to the cheapest other deployment of the route whose interval still
straddles the bar; then the judge model (any LiteLLM model, ``judge.model`` with its
``litellm_params``) is asked whether that answer is as good as the one the caller got. Its
``PASS``/``FAIL`` is an observation of ``judge.metric`` (a pass metric, default ``judged``) for the
candidate, in the request's class.

The spend is capped per route per window: a sample first *reserves* ``reserve_usd`` in the ledger
on an enforced bucket of ``max_usd`` (the ledger's atomic reserve, shared by replicas), and is not
sent when that is refused; it settles at the real cost of both calls (LiteLLM's
``completion_cost``), a spend record with ``purpose: judge`` like any other charge. Which requests are
sampled is a hash of the plugin's request id, so a replay samples the same ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from litellm_payg.core.buckets import Bucket
from litellm_payg.core.quality import class_of, verdict
from litellm_payg.runtime import store_access

logger = logging.getLogger("litellm_payg")

PROMPT = (
    "You compare two answers to the same conversation. Answer A was given to the user. Reply with "
    "exactly PASS if answer B is at least as good as answer A (correct, complete, follows the "
    "instructions), or exactly FAIL if it is worse."
)


def sampled(request_id: str, share: float) -> bool:
    """Whether a request is in the sample: its id's hash below ``share`` (stable across replays)."""
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


def text_of(response: Any) -> str:
    try:
        choice = response.choices[0]
        return str(choice.message.content or "")
    except (AttributeError, IndexError, TypeError):
        return ""


def judged(reply: str) -> bool | None:
    """The judge's verdict: True for PASS, False for FAIL, None when it said neither."""
    words = reply.strip().upper().split()
    first = words[0].strip(".:!") if words else ""
    return {"PASS": True, "FAIL": False}.get(first)


class JudgedSample:
    """The judged sample of one :class:`~litellm_payg.adapter.routing.PaygRouting`."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self._tasks: set[asyncio.Task] = set()

    @property
    def settings(self) -> Any:
        return self.adapter.engine.policy.quality.judge

    def _rule(self, group: str) -> Any:
        for rule in self.adapter.engine.routes.get(group, ()):
            if getattr(getattr(rule, "options", None), "measured", None) is not None:
                return rule
        return None

    def candidate(self, request: Any, served: str, group: str) -> Any:
        """The cheapest other deployment of the route whose interval straddles the bar, or None."""
        engine = self.adapter.engine
        rule = self._rule(group)
        if rule is None:
            return None
        view = engine.quality.view(group, store_access.now(engine))
        if view is None:
            return None
        bar = float(rule.options.min_quality)
        cls = class_of(request, view.class_by)
        metric = rule.options.measured.metric
        unsure = []
        for c in self.adapter._candidates.values():
            if c.group != group or c.deployment_id == served or not c.priced:
                continue
            if verdict(view.estimate(c.deployment_id, c.quality, cls, metric), bar) == "unsure":
                unsure.append((c.estimate_usd(1000, 1000), c))
        return min(unsure, key=lambda ec: ec[0])[1] if unsure else None

    def maybe_sample(self, state: Any, deployment_id: str, messages: Any, response: Any) -> None:
        """Start a sample for this answered request if it is in the share and the window has budget.
        Called when an answer is settled; the calls themselves run in a task of their own."""
        settings = self.settings
        request = getattr(state, "request", None)
        if settings is None or request is None or not getattr(state, "trace_id", None):
            return
        if not sampled(str(state.trace_id), settings.share):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a synchronous caller: nowhere to run a sample off its path
        group = getattr(request, "group", None)
        answer = text_of(response)
        if not group or not isinstance(messages, list) or not answer:
            return
        candidate = self.candidate(request, deployment_id, group)
        if candidate is None:
            return
        engine = self.adapter.engine
        now = store_access.now(engine)
        index = math.floor(now / settings.window_s)
        bucket = Bucket(key=f"judge:{group}:{int(settings.window_s)}:{index}", limit_usd=settings.max_usd, enforce=True,
                        expires_at=(index + 1) * settings.window_s)
        rid = f"judge-{uuid.uuid4().hex}"
        attrs = {"purpose": "judge", "group": group, "deployment": candidate.deployment_id, "model": candidate.model,
                 "judge": settings.model, "trace_id": state.trace_id}
        try:
            reserved = store_access.reserve_judged(engine, rid, bucket, settings.reserve_usd, attrs, now)
        except Exception as exc:  # noqa: BLE001 - a sample is never worth an error
            logger.warning("litellm-payg judge: could not reserve a sample: %s", exc)
            return
        if not reserved:
            return  # the window's judging budget is spent
        cls = class_of(request, engine.quality.settings.class_by)
        task = loop.create_task(self._run(rid, candidate, group, cls, list(messages), answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, rid: str, candidate: Any, group: str, cls: str, messages: Sequence[Any], answer: str) -> None:
        import litellm

        settings = self.settings
        engine = self.adapter.engine
        cost = 0.0
        billed = False
        try:
            router = self.adapter._router_ref() if self.adapter._router_ref else None
            from litellm_payg.adapter.litellm_versions import deployments

            found = [d for d in (deployments(router) if router is not None else ())
                     if str((d.get("model_info") or {}).get("id")) == candidate.deployment_id]
            if not found:
                store_access.release_judged(engine, rid)
                return
            params = {k: v for k, v in dict(found[0].get("litellm_params") or {}).items() if v is not None}
            theirs = await litellm.acompletion(messages=messages, max_tokens=settings.max_tokens, **params)
            billed = True
            cost += _cost(theirs)
            question = [{"role": "system", "content": PROMPT},
                        {"role": "user", "content": f"Conversation:\n{_show(messages)}\n\nAnswer A:\n{answer}\n\n"
                                                    f"Answer B:\n{text_of(theirs)}"}]
            reply = await litellm.acompletion(model=settings.model, messages=question, max_tokens=settings.max_tokens,
                                              **settings.litellm_params)
            cost += _cost(reply)
            said = judged(text_of(reply))
            if said is not None:
                engine.quality.record(group, candidate.deployment_id, settings.metric, said, cls=cls,
                                      model=candidate.model, source="judge", request_id=rid, cost_usd=cost)
            else:
                logger.info("litellm-payg judge: the judge said neither PASS nor FAIL; no evidence recorded")
        except Exception as exc:  # noqa: BLE001 - a failed sample costs what billed, and nothing else
            logger.warning("litellm-payg judge: sample on %s failed: %s", candidate.deployment_id, exc)
        try:
            if billed:
                if cost > settings.reserve_usd:
                    logger.warning("litellm-payg judge: a sample cost $%.6f, above its reservation of $%s: raise "
                                   "judge.reserve_usd or lower judge.max_tokens", cost, settings.reserve_usd)
                store_access.settle_judged(engine, rid, cost)
            else:
                store_access.release_judged(engine, rid)
        except Exception as exc:  # noqa: BLE001
            logger.warning("litellm-payg judge: could not settle sample %s: %s", rid, exc)

    async def drain(self) -> None:
        """Wait for the samples in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _cost(response: Any) -> float:
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # noqa: BLE001 - an unpriced model: the usage is still there
        return 0.0


def _show(messages: Sequence[Any]) -> str:
    out = []
    for m in messages[-6:]:
        if isinstance(m, Mapping):
            content = m.get("content")
            out.append(f"{m.get('role')}: {content if isinstance(content, str) else content!r}"[:4000])
    return "\n".join(out)
