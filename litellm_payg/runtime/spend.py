"""Budgets in force: reserve before a call, settle after it, release when it did not bill.

The engine asks ``SpendControl.admit`` for permission to send a request to a deployment. Admission
reserves a pessimistic estimate (prompt tokens x input price + max output tokens x output price)
against every budget bucket the request falls under, in one atomic ledger call, so a burst of
concurrent requests cannot overshoot a cap. The real cost (LiteLLM's ``response_cost`` of the
deployment that actually ran) settles the reservation; a failed call that did not bill releases it;
a reservation nobody settles (a dead process, an abandoned stream) is charged in full when it
expires. Every answer is recorded in the ledger, budgets or not, so ``report`` can show where the
money went (without budgets, when it settles: nothing is reserved, so nothing is written before).

``block`` and ``downgrade`` budgets are enforced at reservation; ``alert`` budgets only count.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from litellm_payg.core.budgets import Budget, BudgetBucket, all_buckets, loop_bucket, parse_scope, token_bucket
from litellm_payg.core.runs import RunNotFound, RunStatus, RunUsage, downgrade_step, missing_run
from litellm_payg.core.scopes import BUILTIN, ScopeRegistry
from litellm_payg.core.decision import Candidate, Drop, RouteRequest, Step
from litellm_payg.core.errors import BudgetRefused, InvalidAmount, PaygError, UnboundedCost
from litellm_payg.stores.ledger import open_ledger
from litellm_payg.core.headroom import budget_label, exhausted, over, scope_label
from litellm_payg.core.conditions import When
from litellm_payg.stores.ledger.base import MAX_AMOUNT_USD, Ledger, LedgerError, Usage, to_nanos
from litellm_payg.core.snapshot import CandidateBudgets

logger = logging.getLogger("litellm_payg")


class LedgerDown(PaygError):
    """The ledger is unreachable and the policy says ``on_ledger_error: fail_closed``."""

    status_code = 503
    # Final for the request, like a budget block: LiteLLM's Router retries an error whose own
    # ``num_retries`` is unset (three times, with backoff: ~4.8 s before a 503), and a retry a few
    # milliseconds later only meets the same down ledger.
    num_retries = 0


#: APIs a provider bills per image, per second of audio or per query: no per-token bound applies
NOT_BILLED_BY_TOKENS = frozenset({"image_generation", "transcription", "rerank"})

@dataclass
class Admission:
    """Permission to send a request to ``candidate``, with the reservation that backs it."""

    candidate: Candidate
    reservation_id: str
    #: the reservation's amount; None until :meth:`estimate` works it out (an admission without
    #: budgets reserves nothing, so its estimate is only needed as a last-resort charge)
    estimate_usd: float | None
    buckets: list[BudgetBucket]
    attrs: dict[str, Any]
    reserved: bool  # False when admitted fail-open without a ledger
    skipped: list[Drop] = field(default_factory=list)  # downgraded away at reservation time
    created: float = field(default_factory=time.monotonic)
    #: works out ``estimate_usd`` when it is None (it reads the prompt's token count)
    estimate_later: Callable[[], float] | None = field(default=None, repr=False)
    #: the tokens the answer used (prompt and output), for a run's token counter; None: unknown
    tokens: int | None = None

    def estimate(self) -> float:
        """The reservation's amount (the request's pessimistic estimate on ``candidate``)."""
        if self.estimate_usd is None:
            try:
                self.estimate_usd = self.estimate_later() if self.estimate_later is not None else 0.0
            except Exception:  # noqa: BLE001 - LiteLLM's token counter failed on the prompt: nothing to estimate from
                logger.warning("litellm-payg: no estimate for reservation %s: the prompt could not be counted",
                               self.reservation_id, exc_info=True)
                self.estimate_usd = 0.0
            self.estimate_later = None
        return self.estimate_usd


class SpendControl:
    """The budget service of one policy. Thread-safe; the ledger is opened on first use."""

    def __init__(self, policy: Any, ledger: Ledger | str | None = None, clock: Callable[[], float] = time.time):
        self.policy = policy
        #: the policy's scope kinds (``payg_register_scopes``): what a spend record says of a request
        self.scopes: ScopeRegistry = getattr(policy, "scopes", None) or BUILTIN
        self.budgets: list[Budget] = list(policy.budgets)
        self.tz = policy.timezone
        self.ttl_s = float(policy.reservation_ttl_s)
        self.clock = clock
        self._ledger: Ledger | None = ledger if isinstance(ledger, Ledger) else None
        self._ledger_url = ledger if isinstance(ledger, str) else policy.ledger
        self._lock = threading.Lock()
        self._inflight: dict[str, Admission] = {}
        self._unsettled: collections.deque[tuple[Admission, float]] = collections.deque()
        self.downgrades = any(b.on_exceed == "downgrade" for b in self.budgets)
        self._alerting = any(b.alert_at or b.on_exceed == "alert" for b in self.budgets)
        self._bucket_cache: dict[tuple, tuple[float, float, list[BudgetBucket]]] = {}
        #: the scope kinds the budgets are written for: the buckets' cache key (``buckets``)
        self._scope_kinds: tuple[str, ...] = tuple(sorted({parse_scope(b.scope)[0] for b in self.budgets} - {"global"}))
        #: run budgets (``window: session:<idle>``), with their index (their default id is ``b<index>``)
        self.runs: list[tuple[int, Budget]] = [(i, b) for i, b in enumerate(self.budgets) if b.is_run]
        #: a run budget's final-reserve condition, by ``id(budget)``
        self._final: dict[int, When] = {
            id(b): When.parse(b.final_reserve.when, self.scopes) for _, b in self.runs if b.final_reserve is not None}
        #: a run budget's own condition (``when:``): the requests it applies to, by ``id(budget)``
        self._applies: dict[int, When] = {id(b): When.parse(b.when, self.scopes) for _, b in self.runs if b.when is not None}
        #: whether requests need a prompt fingerprint (``RouteRequest.prompt_hash``) for a loop guard
        self.loop_guards = any(b.loop_guard and "prompt" in b.loop_counts for _, b in self.runs)
        #: what of a request's newest turn a loop guard counts (``RouteRequest.loop_marks``, ``runs.loop_marks``)
        self.loop_kinds = frozenset(k for _, b in self.runs if b.loop_guard for k in b.loop_counts if k != "prompt")
        #: whether a decision reads the run's usage (``downgrade`` steps)
        self.run_downgrades = any(b.downgrade for _, b in self.runs)

    # -- the ledger -------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            with self._lock:
                if self._ledger is None:
                    self._ledger = open_ledger(self._ledger_url)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    # -- which budgets a request falls under ------------------------------------------------------

    def buckets(self, request: RouteRequest, candidate: Candidate, now: float | None = None) -> list[BudgetBucket]:
        """The budget buckets a request to ``candidate`` falls under at ``now``.

        Cached per scope values (``scopes.scope_values_key``, of the kinds the budgets are written
        for: a team budget's buckets are the same for every user, session and deployment of the
        team) for as long as every calendar window involved lasts: the window math (time zones,
        DST) is the costly part of a decision with budgets."""
        if not self.budgets:
            return []
        t = self.clock() if now is None else now
        key = self.scopes.values_key(request, candidate, self._scope_kinds)
        cached = self._bucket_cache.get(key)
        if cached is not None and cached[0] <= t < cached[1]:
            return self._for_request(request, cached[2], candidate)
        found = all_buckets(self.budgets, request, candidate, datetime.fromtimestamp(t, timezone.utc), self.tz)
        # downgrade budgets refuse at reservation too (then the next candidate is tried)
        result = [
            replace(bb, bucket=replace(bb.bucket, enforce=True)) if bb.budget.on_exceed == "downgrade" else bb
            for bb in found
        ]
        starts = [bb.window_start.timestamp() for bb in result if bb.window_start is not None]
        ends = [bb.resets_at.timestamp() for bb in result if bb.resets_at is not None]
        valid_from = max(starts) if starts else float("-inf")
        valid_to = min(ends) if ends else float("inf")
        if len(self._bucket_cache) > 50_000:
            self._bucket_cache.clear()
        self._bucket_cache[key] = (valid_from, valid_to, result)
        return self._for_request(request, result, candidate)

    def _for_request(self, request: RouteRequest, found: list[BudgetBucket],
                     candidate: Candidate | None = None) -> list[BudgetBucket]:
        """A run budget's buckets as this request meets them: a request that is not final is held
        to the limit less the final reserve, the run's token counter reserves this request's bound
        of tokens on ``candidate``, and the loop guard counts this request's prompt."""
        if not self.runs:
            return found
        out: list[BudgetBucket] = []
        for bb in found:
            budget = bb.budget
            if self._applies and id(budget) in self._applies and not self.applies(budget, request):
                continue  # a run budget whose `when:` this request does not match: not counted in it
            if not budget.is_run or bb.rule != "cap":
                out.append(bb)
                continue
            if budget.final_reserve is not None and self._final[id(budget)].check(request) is None:
                working = budget.limit_usd * (1 - budget.final_reserve.share)
                bb = replace(bb, bucket=replace(bb.bucket, limit_usd=working), rule="reserve")
            out.append(bb)
            out.append(token_bucket(bb, self.token_bound(request, candidate)))
            if budget.loop_guard:
                if request.prompt_hash and "prompt" in budget.loop_counts:
                    out.append(loop_bucket(bb, request.prompt_hash))
                out.extend(loop_bucket(bb, mark.key, mark.what) for mark in request.loop_marks
                           if mark.kind in budget.loop_counts)
        return out

    # -- runs -------------------------------------------------------------------------------------

    def applies(self, budget: Budget, request: RouteRequest) -> bool:
        """Whether run budget ``budget`` counts ``request``: always, unless its ``when:`` does not match."""
        when = self._applies.get(id(budget))
        return when is None or when.check(request) is not None

    def missing_run(self, request: RouteRequest) -> str | None:
        """The refusal of a request that names no run when the policy requires one
        (``sessions.required``, ``runs.missing_run``), or None."""
        required = getattr(self.policy, "session_required", None)
        if required is None or request.session or required.check(request) is None:
            return None
        return missing_run(self.policy.session_sources)

    def run_buckets(self, session: str, budget: Budget, index: int) -> tuple[BudgetBucket, BudgetBucket]:
        """The dollar bucket and the request counter of run ``session`` under run budget ``budget``."""
        from litellm_payg.core.budgets import buckets_for

        probe = RouteRequest(group="", prompt_tokens=0, output_tokens=0, session=session)
        money, requests = buckets_for(budget, probe, None, datetime.fromtimestamp(self.clock(), timezone.utc),
                                      self.tz, index)
        return money, requests

    def run_usage(self, request: RouteRequest, now: float) -> tuple[tuple[RunUsage, ...], str | None]:
        """The request's run under each run budget with ``downgrade`` steps, read in one ledger
        call: what a decision needs for the progressive downgrade (``Engine.snapshot``)."""
        run = request.run or request.session
        if not self.run_downgrades or not run:
            return (), None
        wanted = [self.run_buckets(run, b, i)[0] for i, b in self.runs if b.downgrade and self.applies(b, request)]
        if not wanted:
            return (), None
        try:
            usage = self.ledger.usage([bb.bucket for bb in wanted], now=now)
        except LedgerError as exc:
            logger.warning("litellm-payg: cannot read run usage (%s); no run downgrade for this decision", exc)
            return (), str(exc)
        return tuple(RunUsage(bb, usage[bb.bucket.key]) for bb in wanted), None

    def run_status(self, session: str, budget: str | None = None) -> RunStatus:
        """What run ``session`` has spent and has left under run budget ``budget`` (its name or
        ``b<index>``; by default the policy's first run budget). Read from the ledger now, so it
        counts every replica's requests on a shared ledger. Raises ``ValueError`` when the policy
        has no such run budget."""
        for index, b in self.runs:
            if budget is None or b.budget_id(index) == budget:
                break
        else:
            have = ", ".join(b.budget_id(i) for i, b in self.runs) or "none"
            raise ValueError(f"no run budget {budget!r} in the policy (run budgets: {have})" if budget
                             else "the policy has no run budget (scope: session:*, window: session:<idle>)")
        return self.run_statuses(str(session), [(index, b)])[0]

    def run_statuses(self, session: str, budgets: Sequence[tuple[int, Budget]]) -> list[RunStatus]:
        """What run ``session`` has spent and has left under each of ``budgets`` (``(index,
        budget)`` of :attr:`runs`), with what an operator changed and its last refusal, read in one
        ledger call."""
        found = [(index, b, *self._run_trio(session, b, index)) for index, b in budgets]
        state = self.ledger.state([bb.bucket for *_, money, requests, tokens in found for bb in (money, requests, tokens)],
                                  now=self.clock())
        return [_status(session, index, b, money, state[money.bucket.key], state[requests.bucket.key],
                        state[tokens.bucket.key]) for index, b, money, requests, tokens in found]

    def _run_trio(self, session: str, budget: Budget, index: int) -> tuple[BudgetBucket, BudgetBucket, BudgetBucket]:
        """A run's dollar bucket, request counter (which also keeps its first request's time, for
        ``max_duration``, and an operator's close) and token counter under one run budget."""
        money, requests = self.run_buckets(session, budget, index)
        return money, requests, token_bucket(money, 0)

    # -- run control: read, close, grant (an operator's; ``Engine.run_control``) -------------------

    def run_report(self, run: str) -> list[RunStatus]:
        """Run ``run`` (a run id, ``identity.run_of``) under every run budget the ledger has it in,
        in policy order. Raises :class:`~litellm_payg.core.runs.RunNotFound` when it has none (an
        unknown id, or a run idle past its window)."""
        live = [s for s in self.run_statuses(str(run), self.runs) if s.live]
        if not live:
            raise RunNotFound(f"litellm-payg: no active run {str(run)!r} (unknown, or idle past its window)")
        return live

    def close_run(self, run: str) -> list[RunStatus]:
        """Close run ``run`` under every run budget it is in: its next request (every replica's)
        is refused at once with ``rule: closed``, until an operator grants it more (or it idles
        out). One atomic ledger call; raises ``RunNotFound`` (nothing changed) for an unknown run."""
        live = self._live_trios(run)
        if not self.ledger.adjust([requests.bucket for _, _, _, requests, _ in live], close=True, now=self.clock()):
            raise RunNotFound(f"litellm-payg: no active run {str(run)!r} (unknown, or idle past its window)")
        return self.run_report(run)

    def grant_run(self, run: str, *, usd: float = 0.0, requests: int = 0, tokens: int = 0, seconds: float = 0.0,
                  budget: str | None = None) -> list[RunStatus]:
        """Grant run ``run`` more under run budget ``budget`` (its name; by default the first the
        run is in): ``usd`` on its limit, ``requests`` on ``max_requests``, ``tokens`` on
        ``max_total_tokens``, ``seconds`` on ``max_duration``; and open it again if it was closed
        (under every run budget). Kept in the ledger and read inside every later reservation, so
        every replica sees it at once and a burst cannot overspend it. One atomic ledger call;
        raises ``RunNotFound`` (nothing changed) for an unknown run, ``ValueError`` naming the
        field for a bad amount or an unknown budget."""
        amounts = _grant_amounts(usd=usd, requests=requests, tokens=tokens, seconds=seconds)
        live = self._live_trios(run)
        target = next((t for t in live if budget is None or t[1].budget_id(t[0]) == budget), None)
        if target is None:
            have = ", ".join(b.budget_id(i) for i, b in self.runs) or "none"
            if budget is not None and budget not in {b.budget_id(i) for i, b in self.runs}:
                raise ValueError(f"budget: no run budget {budget!r} in the policy (run budgets: {have})")
            raise RunNotFound(f"litellm-payg: run {str(run)!r} is not active under run budget {budget!r}")
        _, _, money, req, tok = target
        grant = {money.bucket.key: amounts["usd"], req.bucket.key: float(amounts["requests"]),
                 tok.bucket.key: float(amounts["tokens"])}
        buckets = [req.bucket for _, _, _, req, _ in live] + [money.bucket, tok.bucket]
        if not self.ledger.adjust(buckets, grant=grant, grant_s={req.bucket.key: amounts["seconds"]}, close=False,
                                  now=self.clock()):
            raise RunNotFound(f"litellm-payg: no active run {str(run)!r} (unknown, or idle past its window)")
        return self.run_report(run)

    def _live_trios(self, run: str) -> list[tuple[int, Budget, BudgetBucket, BudgetBucket, BudgetBucket]]:
        live = {s.budget for s in self.run_report(run)}
        return [(index, b, *self._run_trio(str(run), b, index)) for index, b in self.runs if b.budget_id(index) in live]

    def _note_refusal(self, refused: BudgetBucket, found: Sequence[BudgetBucket], error: BudgetRefused) -> None:
        """Keep a run's refusal on its request counter (``Ledger.adjust`` note), so a run's status
        says why it last stopped, on every replica. Best effort: a refusal is never held up by it."""
        if not refused.budget.is_run:
            return
        counter = next((bb for bb in found if bb.budget is refused.budget and bb.rule == "max_requests"
                        and bb.scope_value == refused.scope_value), None)
        if counter is None:
            return
        note = json.dumps({"rule": error.rule, "at": self.clock(), "message": error.message[:1000]})
        try:
            self.ledger.adjust([counter.bucket], note=note, now=self.clock())
        except LedgerError as exc:
            logger.warning("litellm-payg: could not keep the run's last refusal: %s", exc)

    def run_budgets_of(self, request: Any) -> tuple[int, ...]:
        """The indexes (in :attr:`runs`) of the run budgets that apply to ``request`` (a
        ``RouteRequest``; an already answered request keeps them, as ``run_budgets``)."""
        if not isinstance(request, RouteRequest):
            return tuple(getattr(request, "run_budgets", ()) or ())
        if not self.runs or not (request.run or request.session):
            return ()
        return tuple(n for n, (_, b) in enumerate(self.runs) if self.applies(b, request))

    def request_runs(self, request: Any) -> list[RunStatus]:
        """The request's run under every run budget that applies to it (their ``when:``), tightest
        first (the least left to spend), read in one ledger call: what the response headers say.
        ``request``: a ``RouteRequest``, or what an answered request keeps of it (``session``,
        ``run``, ``run_budgets``)."""
        run = getattr(request, "run", None) or getattr(request, "session", None)
        mine = [self.runs[n] for n in self.run_budgets_of(request)]
        if not run or not mine:
            return []
        return sorted(self.run_statuses(str(run), mine), key=lambda s: s.remaining_usd)

    def token_bound(self, request: RouteRequest, candidate: Candidate | None) -> int:
        """The most tokens ``request`` can use on ``candidate``: its prompt and every output token
        the provider may produce (the cap :meth:`reserve_estimate` reserves for)."""
        cap = request.max_tokens or (candidate.max_output_tokens if candidate is not None else None) \
            or self.policy.defaults.reserve_output_tokens
        return int(request.prompt_tokens or 0) + int(cap) * max(1, request.choices)

    def reserve_estimate(self, request: RouteRequest, candidate: Candidate) -> float:
        """An upper bound of what ``candidate``'s provider can bill for ``request``: every output
        token the provider may produce (the request's cap as LiteLLM sends it, else the model's
        maximum, else ``defaults.reserve_output_tokens``), by each of the ``n`` answers asked for,
        at the prices of the long-prompt tier the prompt reaches (and the cache-write price when it
        asks for caching); a speech request's characters at the per-character price. A request billed by something
        the deployment has no price for is reserved at ``requests.unbounded_reserve_usd``, or
        refused (:class:`~litellm_payg.core.errors.UnboundedCost`): never reserved at $0."""
        if request.api == "speech":
            if candidate.input_usd_per_character is not None and request.characters is not None:
                return request.characters * candidate.input_usd_per_character
            return self._unbounded(candidate, "a speech request is billed per character or per audio token, "
                                   "and the deployment has no per-character price (or the input's length is unknown)")
        if request.api in NOT_BILLED_BY_TOKENS:
            return self._unbounded(candidate, f"a {request.api} request is billed per image, second or query")
        input_price, output_price = candidate.input_usd_per_token, candidate.output_usd_per_token
        if input_price is None or output_price is None:  # not candidate.priced
            return self._unbounded(candidate, "the deployment has no per-token price")
        cap = request.max_tokens or candidate.max_output_tokens or self.policy.defaults.reserve_output_tokens
        prompt = request.prompt_tokens
        for threshold, tier_input, tier_output in candidate.price_tiers:  # a long prompt's tier prices
            if prompt >= threshold:
                input_price, output_price = max(input_price, tier_input), max(output_price, tier_output)
        if request.cache_writes and candidate.cache_write_usd_per_token is not None:
            input_price = max(input_price, candidate.cache_write_usd_per_token)
        return prompt * input_price + cap * max(1, request.choices) * output_price

    def _unbounded(self, candidate: Candidate, why: str) -> float:
        ceiling = getattr(self.policy, "unbounded_reserve_usd", None)
        if ceiling is not None:
            return float(ceiling)
        raise UnboundedCost(
            f"litellm-payg: cannot bound the cost of this request on deployment {candidate.deployment_id} "
            f"({candidate.model}): {why}. Give the deployment a price, or set requests.unbounded_reserve_usd "
            "in the policy to reserve a fixed amount for such requests",
            candidate.deployment_id,
        )

    # -- before the call --------------------------------------------------------------------------

    def downgrade_budgets(
        self, request: RouteRequest, candidates: Sequence[Candidate], now: float
    ) -> tuple[dict[str, CandidateBudgets], dict[str, Usage], str | None]:
        """What a decision needs to know about ``downgrade`` budgets, read in one ledger call:
        ``(per candidate id: its downgrade buckets and reservation estimate, usage by bucket key,
        why the ledger could not be read)``. Empty when no downgrade budget applies.

        The I/O half of budget headroom (``Engine.snapshot``); the pure half is
        ``headroom.headroom``. Reservation is still the authority; headroom makes the decision
        (and ``explain``) say why."""
        if not self.downgrades or not candidates:
            return {}, {}, None
        per_candidate: dict[str, CandidateBudgets] = {}
        wanted: dict[str, Any] = {}
        for c in candidates:
            mine = tuple(bb for bb in self.buckets(request, c, now)
                         if bb.budget.on_exceed == "downgrade" and bb.rule in ("cap", "reserve"))
            if mine:
                try:
                    estimate = self.reserve_estimate(request, c)
                except UnboundedCost:
                    continue  # admission refuses it, saying why
                per_candidate[c.deployment_id] = CandidateBudgets(mine, estimate)
                for bb in mine:
                    wanted[bb.bucket.key] = bb.bucket
        if not wanted:
            return {}, {}, None
        try:
            usage = self.ledger.usage(list(wanted.values()), now=now)
        except LedgerError as exc:
            logger.warning("litellm-payg: cannot read budget usage (%s); downgrade checks wait for reservation", exc)
            return {}, {}, str(exc)
        return per_candidate, usage, None

    def admit(
        self,
        request: RouteRequest,
        ordered: Sequence[Candidate],
        reservation_id: str,
        attrs: Mapping[str, Any] | None = None,
    ) -> Admission:
        """Reserve for the first candidate whose budgets have room. A ``downgrade`` refusal moves
        on to the next candidate; a ``block`` refusal raises :class:`~litellm_payg.core.errors.BudgetRefused` (the adapter raises it as LiteLLM's ``BudgetExceededError``).

        A policy without budgets has nothing to enforce, so nothing is written to the ledger on
        the caller's path: the request is admitted in memory and recorded when it settles (on
        LiteLLM's logging worker, after the caller has its answer), as an admission without a
        reservation is under ``fail_open``."""
        if not self.budgets:
            candidate = ordered[0]
            # its estimate only backs a last-resort charge: worked out if one is needed, so a
            # request nothing else needed the prompt's size of is never counted for it
            ledger = self._ledger
            record = {} if ledger is not None and not ledger.keeps_records else self._record(request, candidate, attrs)
            admission = Admission(candidate, reservation_id, None, [], record, reserved=False,
                                  estimate_later=lambda: self.reserve_estimate(request, candidate))
            with self._lock:
                self._inflight[reservation_id] = admission
                self._prune()
            return admission
        skipped: list[Drop] = []
        keeps_records = self._ledger is None or self._ledger.keeps_records
        for candidate in ordered:
            estimate = self.reserve_estimate(request, candidate)
            now = self.clock()  # one reading: the buckets' windows are the reservation's
            found = self.buckets(request, candidate, now)
            record = self._record(request, candidate, attrs) if keeps_records else {}
            try:
                ledger = self._ledger if self._ledger is not None else self.ledger
                result = ledger.reserve(reservation_id, list(map(_BUCKET, found)), estimate, self.ttl_s, now=now, attrs=record)
            except LedgerError as exc:
                return self._ledger_failed(exc, Admission(candidate, reservation_id, estimate, found, record, reserved=True,
                                                          skipped=skipped))
            if result.ok:
                # built only once admitted: a refused candidate (every blocked request) needs none
                admission = Admission(candidate, reservation_id, estimate, found, record, reserved=True, skipped=skipped)
                if self._unsettled:  # the usual case: no charge kept for the ledger
                    self._flush_unsettled()
                with self._lock:
                    self._inflight[reservation_id] = admission
                    self._prune()
                return admission
            refused = next(bb for bb in found if bb.bucket.key == result.refused_by)
            usage = result.usage.get(refused.bucket.key) or Usage(0.0, 0.0)
            # a run's request counts, tokens, age and an operator's close refuse the request whatever
            # the deployment: on_exceed is about dollars
            if (refused.budget.on_exceed == "block" or refused.rule in ("max_requests", "loop", "tokens")
                    or result.refused_rule in ("closed", "age")):
                error = _exceeded(refused, usage, estimate, found, result.usage, result.refused_rule)
                if refused.budget.is_run:  # only a run keeps its refusal (_note_refusal)
                    self._note_refusal(refused, found, error)
                raise error
            skipped.append(Step.drop(candidate, exhausted(refused, usage, estimate), "budget", budget_label(refused)))
        reasons = [(d.deployment_id, d.model, f"{d.by}: {d.reason}") for d in skipped]
        from litellm_payg.core.errors import NoDeploymentLeft

        raise NoDeploymentLeft(request.group, reasons, skipped)

    def _record(self, request: RouteRequest, candidate: Candidate, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The spend record's attributes for an admission; none for a ledger that keeps no records
        (``Ledger.keeps_records``: a what-if replay's), which would only throw them away."""
        if self._ledger is not None and not self._ledger.keeps_records:
            return {}
        return _attrs(self.scopes, request, candidate, attrs)

    def _ledger_failed(self, exc: LedgerError, admission: Admission) -> Admission:
        if self.policy.on_ledger_error == "fail_closed":
            logger.error("litellm-payg: ledger %s unavailable, refusing the request (on_ledger_error: fail_closed): %s", self._ledger_url, exc)
            raise LedgerDown(
                f"litellm-payg: the budget ledger is unavailable ({exc}); requests are refused because the "
                "policy says on_ledger_error: fail_closed"
            ) from exc
        logger.error("litellm-payg: ledger %s unavailable, admitting without a reservation (fail_open): %s", self._ledger_url, exc)
        admission.reserved = False
        with self._lock:
            self._inflight[admission.reservation_id] = admission
        return admission

    # -- after the call ---------------------------------------------------------------------------

    def settle(self, reservation_id: str, cost_usd: float, attrs: Mapping[str, Any] | None = None,
               tokens: int | None = None) -> None:
        """Charge the real cost (and, for a run's token counter, the ``tokens`` the answer used; None:
        its bound stays charged). Never loses a charge: if the ledger is down it is kept and replayed."""
        with self._lock:
            admission = self._inflight.pop(reservation_id, None)
        if admission is None:
            return
        if attrs:
            admission.attrs.update(attrs)
        if tokens is not None:
            admission.tokens = max(0, min(int(tokens), 10**9))
        self._charge(admission, cost_usd)
        if self._alerting:
            self._check_alerts(admission)

    def reserved_usd(self, reservation_id: str) -> float | None:
        """The amount reserved for an open reservation (its pessimistic estimate), or None if it is
        not open here. The last resort for charging an answer whose cost cannot be worked out: it
        billed, so it must not be recorded at $0."""
        with self._lock:
            admission = self._inflight.get(reservation_id)
        return None if admission is None else admission.estimate()

    def release(self, reservation_id: str) -> None:
        """The call did not bill: free its reservation."""
        with self._lock:
            admission = self._inflight.pop(reservation_id, None)
        if admission is None or not admission.reserved:
            return
        try:
            self.ledger.release(reservation_id)
        except LedgerError as exc:
            logger.warning("litellm-payg: could not release reservation %s (%s); it will expire and be charged", reservation_id, exc)

    def _charge(self, admission: Admission, cost_usd: float) -> None:
        try:
            if not (type(cost_usd) is float and 0.0 <= cost_usd <= MAX_AMOUNT_USD):  # what to_nanos accepts at once
                to_nanos(cost_usd, "cost_usd")
        except InvalidAmount as exc:
            # The call billed, but the ledger cannot store what it was said to cost (nan, negative,
            # absurd): charge the reservation's estimate, which the ledger accepted at admission,
            # rather than nothing. Not an outage: nothing is kept for replay.
            logger.error("litellm-payg: %s; charging reservation %s its estimate $%.9f instead",
                         exc, admission.reservation_id, admission.estimate())
            cost_usd = admission.estimate()
        try:
            ledger = self._ledger if self._ledger is not None else self.ledger
            if not admission.reserved:
                # admitted without a reservation (no budgets, or fail-open): book it now as a
                # reservation that settles at once, in one ledger call
                ledger.record(
                    admission.reservation_id,
                    [replace(bb.bucket, enforce=False) for bb in admission.buckets] if admission.buckets else [],
                    cost_usd,
                    self.ttl_s,
                    now=self.clock(),
                    attrs=admission.attrs,
                )
            else:
                ledger.settle(admission.reservation_id, cost_usd, now=self.clock(), attrs=admission.attrs,
                              units=admission.tokens)
        except LedgerError as exc:
            logger.error("litellm-payg: ledger unavailable, keeping a charge of $%.9f to replay: %s", cost_usd, exc)
            with self._lock:
                self._unsettled.append((admission, cost_usd))
            return
        if self._unsettled:  # the usual case, after every charge: nothing kept
            self._flush_unsettled()

    def _flush_unsettled(self) -> None:
        if not self._unsettled:  # the usual case, after every charge: nothing kept (checked again under the lock)
            return
        while True:
            with self._lock:
                if not self._unsettled:
                    return
                admission, cost = self._unsettled.popleft()
            try:
                if not admission.reserved:
                    self.ledger.reserve(
                        admission.reservation_id, [replace(bb.bucket, enforce=False) for bb in admission.buckets],
                        cost, self.ttl_s, now=self.clock(), attrs=admission.attrs,
                    )
                self.ledger.settle(admission.reservation_id, cost, now=self.clock(), attrs=admission.attrs,
                                   units=admission.tokens)
            except LedgerError:
                with self._lock:
                    self._unsettled.appendleft((admission, cost))
                return

    @property
    def in_flight(self) -> int:
        """Admitted requests not yet settled or released (still running, or never reported back
        and not yet expired). Without budgets these are not in the ledger, so "is everything
        settled?" asks this as well as the ledger's open reservations."""
        with self._lock:
            return len(self._inflight)

    @property
    def unsettled(self) -> int:
        """Charges waiting for the ledger to come back."""
        return len(self._unsettled)

    def _prune(self) -> None:
        # abandoned streams never settle; the ledger charges them on expiry, we just forget them
        horizon = time.monotonic() - self.ttl_s
        while self._inflight:
            rid, oldest = next(iter(self._inflight.items()))
            if oldest.created > horizon:
                return
            del self._inflight[rid]

    # -- alerts -----------------------------------------------------------------------------------

    def _check_alerts(self, admission: Admission) -> None:
        watched = [bb for bb in admission.buckets
                   if (bb.budget.alert_at or bb.budget.on_exceed == "alert") and bb.rule in ("cap", "reserve")]
        if not watched:
            return
        try:
            usage = self.ledger.usage([bb.bucket for bb in watched], now=self.clock())
        except LedgerError:
            return
        now = self.clock()
        for bb in watched:
            spent = usage[bb.bucket.key].spent_usd
            thresholds = list(bb.budget.alert_at)
            if bb.budget.on_exceed == "alert" and 1.0 not in thresholds:
                thresholds.append(1.0)
            for threshold in thresholds:
                if spent < threshold * bb.budget.limit_usd:
                    continue
                if bb.resets_at is not None:
                    ttl = max(1.0, bb.resets_at.timestamp() - now)
                else:
                    ttl = float(bb.bucket.rolling_s or 3600)
                if not self.ledger.claim_once(f"alert|{bb.bucket.key}|{threshold}", ttl, now=now):
                    continue
                self.policy.plugin_manager.hook.payg_budget_alert(
                    budget=bb.budget,
                    bucket=bb.bucket.key,
                    scope=scope_label(bb),
                    threshold=threshold,
                    spent_usd=spent,
                    limit_usd=bb.budget.limit_usd,
                    resets_at=bb.resets_at,
                    policy=self.policy,
                )


_BUCKET = operator.attrgetter("bucket")  # a BudgetBucket's ledger bucket


def _exceeded(bb: BudgetBucket, usage: Usage, estimate: float, found: Sequence[BudgetBucket] = (),
              usages: Mapping[str, Usage] | None = None, why: str | None = None) -> BudgetRefused:
    budget = bb.budget
    if budget.is_run and (bb.rule != "cap" or why in ("closed", "age")):
        money = next((m for m in found if m.budget is budget and m.rule in ("cap", "reserve")
                      and m.scope_value == bb.scope_value), None)
        spent = (usages or {}).get(money.bucket.key, Usage(0.0, 0.0)) if money is not None else usage
        common = dict(budget=budget_label(bb), scope=scope_label(bb), window=budget.window,
                      limit_usd=budget.limit_usd + spent.granted_usd, estimate_usd=estimate)
        if why == "closed":
            return BudgetRefused(**common, spent_usd=spent.spent_usd, reserved_usd=spent.reserved_usd, rule="closed")
        if why == "age":
            return BudgetRefused(**common, spent_usd=spent.spent_usd, reserved_usd=spent.reserved_usd, rule="duration",
                                 count_limit=int(budget.max_duration_s or 0))
        if bb.rule == "tokens":
            return BudgetRefused(**common, spent_usd=spent.spent_usd, reserved_usd=spent.reserved_usd, rule="tokens",
                                 count=int(round(usage.spent_usd + usage.reserved_usd)),
                                 count_limit=int(round((budget.max_total_tokens or 0) + usage.granted_usd)),
                                 tokens_asked=bb.bucket.units)
        if bb.rule == "reserve":
            # held to the working limit: the full limit would have been exceeded too, or only the reserve
            rule = "cap" if over(usage, estimate, budget.limit_usd + usage.granted_usd) else "reserve"
            return BudgetRefused(**common, spent_usd=usage.spent_usd, reserved_usd=usage.reserved_usd, rule=rule,
                                 reserve_usd=budget.limit_usd * budget.final_reserve.share)  # type: ignore[union-attr]
        # a count refused: the run's dollars are said too
        if money is None:
            spent = Usage(0.0, 0.0)
        return BudgetRefused(
            **common, spent_usd=spent.spent_usd, reserved_usd=spent.reserved_usd, rule=bb.rule,
            count=int(round(usage.spent_usd + usage.reserved_usd)),
            count_limit=(int(round((budget.max_requests or 0) + usage.granted_usd)) if bb.rule == "max_requests"
                         else budget.loop_guard),
            repeated=bb.what if bb.rule == "loop" else None,
        )
    return BudgetRefused(
        budget=budget_label(bb),
        scope=scope_label(bb),
        window=bb.budget.window,
        spent_usd=usage.spent_usd,
        reserved_usd=usage.reserved_usd,
        limit_usd=bb.budget.limit_usd + usage.granted_usd,
        estimate_usd=estimate,
        resets_at=bb.resets_at,
    )


def _status(session: str, index: int, budget: Budget, money: BudgetBucket, m: Any, r: Any, t: Any) -> RunStatus:
    """A run's :class:`RunStatus` under one run budget from the ledger's state of its dollar
    bucket (``m``), request counter (``r``) and token counter (``t``)."""
    limit = budget.limit_usd + m.usage.granted_usd
    share = (m.usage.spent_usd + m.usage.reserved_usd) / limit if limit else 1.0
    steps = [step.at for step in budget.downgrade if share >= step.at]
    granted_requests, granted_tokens = int(round(r.usage.granted_usd)), int(round(t.usage.granted_usd))
    try:
        last = json.loads(r.note) if r.note else None
    except ValueError:
        last = None
    return RunStatus(
        session=session, budget=budget.budget_id(index), window=budget.window,
        spent_usd=m.usage.spent_usd, reserved_usd=m.usage.reserved_usd, limit_usd=limit,
        requests=int(round(r.usage.spent_usd + r.usage.reserved_usd)),
        max_requests=None if budget.max_requests is None else budget.max_requests + granted_requests,
        reserve_usd=budget.limit_usd * budget.final_reserve.share if budget.final_reserve is not None else 0.0,
        tokens=int(round(t.usage.spent_usd + t.usage.reserved_usd)),
        max_total_tokens=None if budget.max_total_tokens is None else budget.max_total_tokens + granted_tokens,
        started_at=r.first_at, last_at=r.last_at, idle_s=money.bucket.idle_s,
        max_duration_s=None if budget.max_duration_s is None else budget.max_duration_s + r.granted_s,
        closed=r.closed, granted_usd=m.usage.granted_usd, granted_requests=granted_requests,
        granted_tokens=granted_tokens, granted_s=r.granted_s, downgrade_at=steps[-1] if steps else None,
        last_refusal=last if isinstance(last, dict) else None, live=r.live or m.live,
    )


def _grant_amounts(**amounts: Any) -> dict[str, Any]:
    """A grant's amounts, checked: numbers >= 0 (whole for requests and tokens), bounded, at least
    one above 0; a ValueError names the field."""
    out: dict[str, Any] = {}
    limits = {"usd": 1e9, "requests": 1_000_000, "tokens": 1_000_000_000, "seconds": 366 * 86400}
    for name, value in amounts.items():
        whole = name in ("requests", "tokens")
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not float(value).is_integer()):
            raise ValueError(f"{name}: expected {'a whole number' if whole else 'a number'} >= 0, got {value!r}")
        if not math.isfinite(value) or value < 0 or value > limits[name]:
            raise ValueError(f"{name}: expected a number from 0 to {limits[name]:g}, got {value!r}")
        out[name] = int(value) if whole else float(value)
    if not any(out.values()):
        raise ValueError("a grant needs at least one of usd, requests, tokens, seconds above 0")
    return out


def _attrs(scopes: ScopeRegistry, request: RouteRequest, candidate: Candidate,
           extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out = scopes.record_attrs(request, candidate)  # every scope's value, under the name reports filter on
    if request.run and request.run != request.session:
        # the session as the client sent it (what reports filter on), and the run it counted in:
        # that session of the key (or team) that sent it (identity.run_of)
        out["session"], out["run"] = request.session, request.run
    if request.trace_id:
        out["trace_id"] = request.trace_id  # a label for finding one request's charges, not a scope
    if extra:
        out.update(extra)
    return out
