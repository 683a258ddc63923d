"""Run budgets (``scope: session:*``, ``window: session:<idle>``): the pure half.

A run is what a client names with a session id (``wire.identity.session_of``): an agent's conversation,
a batch job. Its budget is a ledger bucket that lives until the run has been idle for the window's
time, plus counters (requests, one prompt's repeats) reserved with it in one atomic call
(``budgets.buckets_for``, ``budgets.loop_bucket``). What is decided rather than reserved lives here:

* :func:`downgrade_step` / :func:`downgrade`: past a share of the run's limit (spent and in flight,
  read into the snapshot), the run's requests go to the cheapest deployment whose quality is at
  least the step's ``min_quality``; the route's own rules are set aside for it;
* :func:`prompt_hash`: what the loop guard counts of a whole prompt;
* :func:`loop_marks`: what it counts of an agent's loop (``loop_counts``): the tool calls, the
  (tool call, tool result) pairs and the assistant output of the *newest* turn only, so a
  conversation that grows each turn is still seen repeating itself, and each request hashes a
  few messages, never the whole conversation;
* :func:`missing_run`: the refusal of a request without a run id when ``sessions.required``;
* :class:`RunStatus`: what a run has spent and has left (``Engine.run_status``, response headers).

Session ids are written by the client: a run cap bounds an honest runaway client, never a hostile
one (a new session id is a new run); the key, user and team caps do that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litellm_payg.core.budgets import Budget, BudgetBucket, DowngradeStep
from litellm_payg.core.buckets import Usage
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.core.identity import session_in


def prompt_hash(messages: Any) -> str | None:
    """A short, stable fingerprint of a request's messages (None without messages): two sends of
    the same conversation hash alike whatever the key order of their dicts."""
    if not messages:
        return None
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


#: what a loop guard may count (``loop_counts``): the whole prompt, the newest turn's tool calls
#: (name and arguments), its (tool call, tool result) pairs, its assistant output
LOOP_KINDS = ("prompt", "tool_call", "tool_result", "output")

_DIGEST = 8  # hex digits of a digest shown in a refusal: enough to tell two calls apart by eye
_MAX_TOOL_NAME = 64  # a tool name in a refusal (the client wrote it): bounded


@dataclass(frozen=True)
class LoopMark:
    """One thing a request repeats that a loop guard counts in its run: ``kind`` (one of
    :data:`LOOP_KINDS` but ``prompt``), ``key`` (a digest: the ledger counter's name) and ``what``
    (how a refusal names it: the tool's name and a short digest of its arguments)."""

    kind: str
    key: str
    what: str


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"),
                                                          default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _arguments(raw: Any) -> Any:
    """A tool call's arguments, so that ``{"a":1,"b":2}`` and ``{"b": 2, "a": 1}`` are the same call:
    a JSON string is parsed (keys sorted when hashed); anything else is hashed as it is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


@dataclass
class _Turn:
    """The newest assistant turn of a request, in any of the wire formats LiteLLM takes: its tool
    calls ``(id, name, arguments)``, the tool results sent after it ``(call id, content)`` and its
    text (None when it called a tool)."""

    calls: list[tuple[str | None, str, Any]]
    results: list[tuple[str | None, Any]]
    text: Any = None


def _newest_turn(messages: Sequence[Any]) -> _Turn | None:
    """The answer the run got to its previous request, and what its tools returned: the newest
    assistant message (OpenAI chat: ``tool_calls``; Anthropic messages: ``tool_use`` blocks, their
    ``tool_result`` blocks in the user message after it) or the newest ``function_call`` items of a
    Responses ``input`` (with their ``function_call_output``). Walks back from the end only as far
    as that turn. None: the request has no assistant turn."""
    results: list[tuple[str | None, Any]] = []
    calls: list[tuple[str | None, str, Any]] = []
    for item in reversed(messages):
        if not isinstance(item, Mapping):
            continue
        kind, role = item.get("type"), item.get("role")
        if kind == "function_call_output":  # Responses input
            results.append((_id(item.get("call_id")), item.get("output")))
            continue
        if kind == "function_call":
            calls.append((_id(item.get("call_id")), str(item.get("name") or "?"), item.get("arguments")))
            continue
        if calls:  # the Responses turn's calls end here
            return _Turn(calls, results)
        content = item.get("content")
        if role in ("tool", "function"):  # OpenAI chat
            results.append((_id(item.get("tool_call_id")), content))
        elif role == "user" and isinstance(content, list) and content and all(
                isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content):  # Anthropic
            results.extend((_id(b.get("tool_use_id")), b.get("content")) for b in content)
        elif role == "assistant":
            for call in item.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    calls.append((_id(call.get("id")), str(function.get("name") or "?"), function.get("arguments")))
            if isinstance(content, list):
                calls.extend((_id(b.get("id")), str(b.get("name") or "?"), b.get("input")) for b in content
                             if isinstance(b, Mapping) and b.get("type") == "tool_use")
            return _Turn(calls, results, None if calls else _text(content))
        # anything else (the user's own words, a system message) is passed over
    return _Turn(calls, results) if calls else None


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _text(content: Any) -> Any:
    """An assistant message's content for a digest: a string, or the text parts of a list."""
    if isinstance(content, list):
        return [part.get("text") if isinstance(part, Mapping) else part for part in content]
    return content


def loop_marks(messages: Any, kinds: frozenset[str]) -> tuple[LoopMark, ...]:
    """What a run's loop guard counts of this request (``kinds``: of :data:`LOOP_KINDS`), read from
    its newest assistant turn (:func:`_newest_turn`: OpenAI chat, Anthropic messages, Responses
    input): each tool call (name and arguments), each (tool call, tool result) pair whose result
    follows it, and the assistant's output (its text, when it called no tool). An agent stuck in a
    loop makes the same call again and again, and gets the same result: each time it is the newest
    turn of a request whose conversation has grown by it, so counting the newest turn counts the
    repeats whatever else the conversation holds. Identical marks of one request count once."""
    if not kinds or not isinstance(messages, (list, tuple)) or not messages:
        return ()
    turn = _newest_turn(messages)
    if turn is None:
        return ()
    out: dict[str, LoopMark] = {}
    by_id: dict[str, tuple[str, str]] = {}  # call id -> (args digest, label)
    for call_id, name, arguments in turn.calls:
        name = name[:_MAX_TOOL_NAME]
        args = _digest([name, _arguments(arguments)])
        label = f"tool call {name}(args sha256:{args[:_DIGEST]})"
        if "tool_call" in kinds:
            out[f"call:{args}"] = LoopMark("tool_call", f"call:{args}", f"the same {label}")
        if call_id is not None:
            by_id[call_id] = (args, label)
    if "tool_result" in kinds:
        for call_id, content in turn.results:
            call = by_id.get(call_id) if call_id is not None else None
            if call is None:
                continue
            args, label = call
            pair = _digest([args, _text(content)])
            out[f"result:{pair}"] = LoopMark(
                "tool_result", f"result:{pair}", f"the same {label} with the same result (sha256:{pair[:_DIGEST]})")
    if "output" in kinds and turn.text:
        text = _digest(turn.text)
        out[f"output:{text}"] = LoopMark("output", f"output:{text}", f"the same assistant output (sha256:{text[:_DIGEST]})")
    return tuple(out.values())


def missing_run(sources: Sequence[str]) -> str:
    """The refusal of a governed request that names no run under ``sessions.required``: where the
    run id is read from (``sessions.id_from``), in the order tried."""
    where = []
    for source in sources:
        if source.startswith("header:"):
            where.append(f"the {source.split(':', 1)[1]} header")
        elif source.startswith("metadata."):
            where.append(f"metadata.{source.split('.', 1)[1]}")
        else:
            where.append(f"the {source} field")
    return (f"litellm-payg: this request names no run, and the policy requires one (sessions.required): "
            f"send a run id (a string) in {' or '.join(where)}")


@dataclass(frozen=True)
class RunUsage:
    """One run budget's dollar bucket for a request's run, and its usage when the snapshot was taken."""

    bucket: BudgetBucket
    usage: Usage

    @property
    def share(self) -> float:
        """Spent and in flight, as a share of the run's limit."""
        limit = self.bucket.budget.limit_usd + self.usage.granted_usd  # an operator's grant raises it
        return (self.usage.spent_usd + self.usage.reserved_usd) / limit if limit else 1.0


def downgrade_step(runs: Sequence[RunUsage]) -> tuple[RunUsage, DowngradeStep] | None:
    """The downgrade step in force: of the first run budget (policy order) past one of its steps,
    the last step it is past."""
    for run in runs:
        passed = [step for step in run.bucket.budget.downgrade if run.share >= step.at]
        if passed:
            return run, passed[-1]
    return None


def downgrade(request: RouteRequest, candidates: Sequence[Candidate], runs: Sequence[RunUsage],
              floor: Callable[[], float | None] | None = None) -> Step | None:
    """The run's progressive downgrade as a decision step, or None when no step is in force: the
    candidates whose quality is at least the step's ``min_quality``, cheapest first for this
    request; the others (and those without a quality score or a price) dropped with the reason.

    A step never goes below the bar the request keeps: ``floor`` (called only when a step is in
    force) is the bar of the route's rules that apply to it (``quality_floor``, unless the entry says
    ``keep_past_downgrade: false``: a ``plan`` step's 0.9 stays 0.9 past a step of 0.6), and the
    client's ``min_quality`` hint (hints only tighten) raises it too."""
    found = downgrade_step(runs)
    if found is None:
        return None
    run, step = found
    rule_bar = floor() if floor is not None else None
    own = max((b for b in (rule_bar, request.min_quality) if b is not None), default=None)
    held = ""
    if own is not None and own > step.min_quality:
        whose = "the client's min_quality hint" if own == request.min_quality and own != rule_bar else "the route's quality_floor"
        held = f"; the step's bar {step.min_quality:g} is raised to {own:g}: the floor this request keeps ({whose}) holds"
        step = DowngradeStep(at=step.at, min_quality=own)
    budget = run.bucket.budget
    used = run.usage.spent_usd + run.usage.reserved_usd
    why = (f"run {session_in(run.bucket.scope_value)!r} has used {run.share:.0%} of budget {budget_label(budget, run)!r} "
           f"(${used:.6f} of ${budget.limit_usd + run.usage.granted_usd:g}): past its downgrade step at {step.at:g}")
    kept: list[tuple[float, Candidate]] = []
    dropped = []
    for c in candidates:
        if c.quality is None:
            dropped.append(Step.drop(c, f"{why}; no quality score for {c.model} in the policy's models:", "run"))
        elif c.quality < step.min_quality:
            dropped.append(Step.drop(c, f"{why}; quality {c.quality:g} is below the step's bar {step.min_quality:g}", "run"))
        elif not c.priced:
            dropped.append(Step.drop(c, f"{why}; {c.model} has no known price to compare", "run"))
        else:
            kept.append((c.estimate_usd(request.prompt_tokens, request.output_tokens), c))
    kept.sort(key=lambda ec: ec[0])
    return Step([c for _, c in kept], dropped,
                f"{why}; cheapest deployment with quality >= {step.min_quality:g} (the route's rules are set aside){held}",
                {"run_downgrade": f"{step.at:g}"})


def budget_label(budget: Budget, run: RunUsage) -> str:
    return budget.name or run.bucket.bucket.key.split("|", 1)[0]


@dataclass(frozen=True)
class RunStatus:
    """What one run has spent and has left under one run budget (``Engine.run_status``), with
    what an operator changed (grants, a close) and the run's last refusal (``Engine.run_control``)."""

    session: str
    budget: str
    window: str
    spent_usd: float  #: settled charges of this run
    reserved_usd: float  #: reservations of requests still in flight
    limit_usd: float  #: the budget's limit plus what an operator granted
    requests: int  #: requests answered or in flight in this run
    max_requests: int | None  #: ``max_requests`` plus what an operator granted
    #: dollars kept for the run's final requests (``final_reserve``), 0 without one
    reserve_usd: float
    #: the run's tokens: settled answers' prompt and output, and the bound of each request in flight
    tokens: int = 0
    max_total_tokens: int | None = None  #: plus what an operator granted
    #: the run's first request and last activity (epoch seconds); None for a run the ledger has not
    started_at: float | None = None
    last_at: float | None = None
    idle_s: float | None = None  #: the window's idle time: the run starts afresh at ``last_at + idle_s``
    #: ``max_duration`` in seconds plus what an operator granted (None without one)
    max_duration_s: float | None = None
    closed: bool = False  #: an operator closed it (``Engine.run_control``)
    granted_usd: float = 0.0
    granted_requests: int = 0
    granted_tokens: int = 0
    granted_s: float = 0.0
    #: the downgrade step in force (its ``at``), None when none is
    downgrade_at: float | None = None
    #: the run's last refusal (``rule``, ``message``, ``at``), None when it had none
    last_refusal: Mapping[str, Any] | None = None
    live: bool = True  #: the ledger has the run (False: unknown, or idle past its window)

    @property
    def remaining_usd(self) -> float:
        """What the run may still spend, its final reserve included."""
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)

    @property
    def working_remaining_usd(self) -> float:
        """What the run's requests that are not final may still spend (the reserve left out)."""
        return max(0.0, self.limit_usd - self.reserve_usd - self.spent_usd - self.reserved_usd)

    @property
    def expires_at(self) -> float | None:
        """When the run, idle from now on, starts afresh (epoch seconds)."""
        return None if self.last_at is None or self.idle_s is None else self.last_at + self.idle_s

    @property
    def ends_at(self) -> float | None:
        """When ``max_duration`` (grants included) stops the run's requests (epoch seconds)."""
        return None if self.started_at is None or self.max_duration_s is None else self.started_at + self.max_duration_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session, "budget": self.budget, "window": self.window,
            "spent_usd": self.spent_usd, "reserved_usd": self.reserved_usd, "limit_usd": self.limit_usd,
            "remaining_usd": self.remaining_usd, "working_remaining_usd": self.working_remaining_usd,
            "requests": self.requests, "max_requests": self.max_requests, "reserve_usd": self.reserve_usd,
            "tokens": self.tokens, "max_total_tokens": self.max_total_tokens,
            "started_at": self.started_at, "last_at": self.last_at, "expires_at": self.expires_at,
            "max_duration_s": self.max_duration_s, "ends_at": self.ends_at, "closed": self.closed,
            "granted": {"usd": self.granted_usd, "requests": self.granted_requests, "tokens": self.granted_tokens,
                        "seconds": self.granted_s},
            "downgrade_at": self.downgrade_at, "last_refusal": dict(self.last_refusal) if self.last_refusal else None,
            "live": self.live,
        }


class RunNotFound(LookupError):
    """No live run has this id under the policy's run budgets (a typo, a forged id, or a run idle
    past its window): nothing was changed."""


class NotYourRun(PermissionError):
    """A caller that is not an operator named a run another key (or team) owns."""


def run_for(asked: str, who: Any, owner: str, operator: bool) -> str:
    """The run a run-control call means, given what the caller wrote (``asked``) and who it is
    (``identity.RequestIdentity``; None in Python, where the calling code is the operator's).

    An operator names a run exactly as the ledger keys it (``<session>@key:<16 hex>``, as
    ``litellm-payg budgets`` and the spend records' ``run`` show it), or a session of its own. Any
    other caller names a session id of its own (or its own run id): the run is that session of
    the caller's key (or team, under ``sessions.owner``), so it can only reach runs it owns; a run
    id qualified with another owner raises :class:`NotYourRun`."""
    from litellm_payg.core.identity import run_of

    asked = str(asked)
    session = session_in(asked)
    if operator:
        return asked
    mine = run_of(session, who, owner)
    if session != asked and mine != asked:
        raise NotYourRun(f"litellm-payg: run {asked!r} is not this key's: a key reads, closes or is granted only "
                         "its own runs; the operator's key reaches every run")
    return mine or asked


__all__ = ["LOOP_KINDS", "LoopMark", "NotYourRun", "RunNotFound", "RunStatus", "RunUsage", "downgrade", "downgrade_step",
           "loop_marks", "missing_run", "prompt_hash", "run_for"]
