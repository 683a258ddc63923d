"""Plain data that a routing decision is made of.

The decision is a pure function over these values (see ``engine.py``): nothing here imports
LiteLLM, so the same objects serve the live adapter, ``litellm-payg explain`` and ``simulate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

#: what ``RouteRequest(prompt_tokens=...)`` accepts: the count, or a zero-argument callable that
#: returns it (called on first read, at most once)
PromptCount = int | Callable[[], int]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One deployment of a model group, with what the policy needs to know about it.

    Prices are USD per token, already resolved by ``pricing.py`` (policy override, then the
    deployment's own ``litellm_params`` price, then LiteLLM's price map); ``None`` means unknown.
    """

    deployment_id: str
    model: str  # the LiteLLM model string, e.g. "deepseek/deepseek-chat"
    provider: str
    group: str
    input_usd_per_token: float | None
    output_usd_per_token: float | None
    quality: float | None = None
    max_input_tokens: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: where the price came from: "policy" (``models:``), "deployment" (its ``litellm_params`` or
    #: ``model_info``), "litellm" (the price map, for the deployment's ``base_model`` or model)
    price_source: str | None = None
    #: the most output tokens the model produces (the deployment's ``model_info``, else LiteLLM's
    #: price map): what a request that sends no cap may be billed for
    max_output_tokens: int | None = None
    #: USD per character of input, for models billed by the character (text to speech)
    input_usd_per_character: float | None = None
    #: LiteLLM's long-prompt tiers: ``(prompt tokens, input, output USD per token)``, ascending; a
    #: prompt at or above a threshold is billed the tier's prices for all its tokens
    price_tiers: tuple[tuple[int, float, float], ...] = ()
    #: USD per prompt token written to the provider's cache (the dearest of its cache lifetimes)
    cache_write_usd_per_token: float | None = None
    #: what LiteLLM's own checks read of the deployment (``feasibility.py``), worked out at bind time:
    #: LiteLLM's context window for it (its ``model_info.max_input_tokens``, else the price map's)
    litellm_max_input_tokens: int | None = None
    #: the deployment declares no vision (``model_info.supports_vision: false``, or the price map
    #: says so): LiteLLM keeps image requests away from it while another deployment takes them
    no_vision: bool = False
    #: ``litellm_params.order``: LiteLLM sends a request to the lowest order first
    order: int | None = None
    #: ``litellm_params.region_name``, which LiteLLM's pre-call checks match ``allowed_model_region`` to
    region: str | None = None

    @property
    def priced(self) -> bool:
        return self.input_usd_per_token is not None and self.output_usd_per_token is not None

    def estimate_usd(self, prompt_tokens: int, output_tokens: int) -> float:
        """Cost of a request of this size here; an unpriced candidate has no estimate."""
        if not self.priced:
            raise ValueError(f"deployment {self.deployment_id} ({self.model}) has no known price")
        return prompt_tokens * self.input_usd_per_token + output_tokens * self.output_usd_per_token  # type: ignore[operator]

    def usd_per_1k(self, prompt_tokens: int, output_tokens: int) -> float:
        """This request's blended price per 1K tokens here: estimated cost / total tokens * 1000.

        For a prompt-heavy request it approaches the input price, for an output-heavy one the
        output price. This is the number ``cost_threshold`` compares against its threshold.
        """
        total = prompt_tokens + output_tokens
        if total <= 0:
            return (self.input_usd_per_token or 0.0) * 1000
        return self.estimate_usd(prompt_tokens, output_tokens) / total * 1000


class CandidateSet(tuple):
    """A group's candidates as the adapter hands them to every pick: one object for the same
    deployments in the same order, until they change (the adapter then makes a new one).

    Why: what a rule or a check works out from the candidates alone (their context windows, which of
    them clear a quality bar, where their price order can change) is the same on every pick of the
    group, and at 20 or 200 candidates working it out again was most of a decision. It may be kept
    in :attr:`memo` (:func:`memo_of`), which lives and dies with the set: the adapter's new set for
    changed deployments starts with an empty one. A plain list or tuple of candidates (a rule's
    output, a caller's own) has no memo and is worked out every time."""

    def __new__(cls, candidates: Sequence[Candidate] = ()) -> "CandidateSet":
        self = super().__new__(cls, candidates)
        #: what has been worked out from this set, by its maker's key (bounded by its users)
        self.memo: dict[Any, Any] = {}
        return self


def memo_of(candidates: Sequence[Candidate]) -> dict[Any, Any] | None:
    """The memo of a :class:`CandidateSet`, None for any other sequence of candidates."""
    return candidates.memo if type(candidates) is CandidateSet else None  # type: ignore[attr-defined]


class _CountedOnRead:
    """The ``prompt_tokens`` field of :class:`RouteRequest`: an ``int`` to every reader, given either
    as the count or as a zero-argument callable that returns it. The callable runs on the first
    read, once; the count then replaces it.

    Why: counting a prompt (``litellm.token_counter``) costs more than the rest of a decision, and
    many requests never need the number: a policy without budgets whose rules order candidates by
    something other than the request's size. The adapter hands the count over unevaluated, so only
    a reader that needs it (a reservation estimate, a rule that prices this request, a size tier)
    pays for it. Nothing here knows how a prompt is counted.
    """

    _REQUIRED = object()

    def __init__(self, default: Any = _REQUIRED) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            # the class-level read dataclasses makes to find a default
            if self.default is _CountedOnRead._REQUIRED:
                raise AttributeError(self.name)
            return self.default
        value = obj.__dict__[self.name]
        if type(value) is int:  # counted already: the usual read (several per decision)
            return value
        if callable(value):
            value = value()
            value = None if value is None else int(value)
            obj.__dict__[self.name] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        # only the dataclass's own __init__ gets here (the instance is frozen)
        obj.__dict__[self.name] = value


_FRESH: Any = object()  # ``RouteRequest(metadata=...)`` not given: a dict of its own


@dataclass(frozen=True)
class RouteRequest:
    """What the policy knows about a request before it is sent.

    ``user``/``team``/``api_key`` come from the authenticated key (in the SDK, the calling code's
    ``metadata``); ``end_user`` and ``tags`` are what the client asserts (``identity.py``).
    ``min_quality`` and ``allowed_models`` are client hints, already sanitised so they can only
    tighten the policy. ``choices`` is how many answers the request asks for (``n``): each is
    billed its own output tokens.

    ``prompt_tokens`` may be given as a zero-argument callable: it is then counted when first read
    (:class:`_CountedOnRead`), and :attr:`prompt_counted` says whether anything has read it yet.
    """

    group: str
    prompt_tokens: int = _CountedOnRead()  # type: ignore[assignment]  # required: no default
    output_tokens: int  # expected output tokens, for routing estimates
    max_tokens: int | None = None  # the request's own cap, for budget reservations
    user: str | None = None
    team: str | None = None
    api_key: str | None = None
    tags: tuple[str, ...] = ()
    end_user: str | None = None
    choices: int = 1
    min_quality: float | None = None
    allowed_models: frozenset[str] | None = None
    trace_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: the session the request belongs to, as the client names it (``wire.identity.session_of``); read
    #: by ``when: {session: ...}``
    session: str | None = None
    #: the run the request's run budgets count it in: its session qualified by who started the run
    #: (``identity.run_of``: the key, or the team, under ``sessions.owner``), so another key naming
    #: the same session id gets a run of its own. None: the session itself
    run: str | None = None
    #: a fingerprint of the request's messages (``runs.prompt_hash``), for a run budget's loop guard;
    #: None when no run budget has one (the adapter only hashes then)
    prompt_hash: str | None = None
    #: what a loop guard counts of the request's newest turn (``runs.loop_marks``: its tool calls,
    #: tool results, output); empty when no run budget counts them
    loop_marks: tuple[Any, ...] = ()
    #: an upper bound on ``prompt_tokens`` known without counting (``prices.prompt_tokens_at_most``),
    #: or None: a rule whose outcome is the same for any size up to it need not count the prompt.
    #: Like ``prompt_tokens`` it may be given as a callable, worked out on the first read
    prompt_tokens_at_most: int | None = _CountedOnRead(default=None)  # type: ignore[assignment]
    #: the API it came through (``completion``, ``responses``, ``speech``...; ``request_checks.api_of``),
    #: None when not known: what the provider bills it by
    api: str | None = None
    #: the characters of a speech request's ``input`` (billed per character by some models)
    characters: int | None = None
    #: the prompt marks parts for the provider's cache (``cache_control``): they may be billed at
    #: the cache-write price
    cache_writes: bool = False
    #: what LiteLLM's own checks ask of a deployment for this request (``feasibility.Needs``), or
    #: None: nothing beyond the prompt's size
    needs: Any = None
    #: request attributes declared by a scope kind that has no field above (``scopes.request_attribute``,
    #: e.g. ``org``), by the kind's name: filled at the door from where the declaration says
    attrs: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        group: str,
        prompt_tokens: PromptCount,
        output_tokens: int,
        max_tokens: int | None = None,
        user: str | None = None,
        team: str | None = None,
        api_key: str | None = None,
        tags: tuple[str, ...] = (),
        end_user: str | None = None,
        choices: int = 1,
        min_quality: float | None = None,
        allowed_models: frozenset[str] | None = None,
        trace_id: str | None = None,
        metadata: Mapping[str, Any] = _FRESH,  # type: ignore[assignment]
        session: str | None = None,
        run: str | None = None,
        prompt_hash: str | None = None,
        loop_marks: tuple[Any, ...] = (),
        prompt_tokens_at_most: int | Callable[[], int] | None = None,
        api: str | None = None,
        characters: int | None = None,
        cache_writes: bool = False,
        needs: Any = None,
        attrs: Mapping[str, str] = _FRESH,  # type: ignore[assignment]
    ) -> None:
        # written out rather than generated: one is built on every pick (and every what-if row), and
        # a generated frozen __init__ sets each of these fields with ``object.__setattr__``, which
        # cost twice this. The two counted-on-read fields are stored as their descriptor would.
        vars(self).update(
            group=group, prompt_tokens=prompt_tokens, output_tokens=output_tokens, max_tokens=max_tokens, user=user,
            team=team, api_key=api_key, tags=tags, end_user=end_user, choices=choices, min_quality=min_quality,
            allowed_models=allowed_models, trace_id=trace_id, metadata={} if metadata is _FRESH else metadata,
            session=session, run=run, prompt_hash=prompt_hash, loop_marks=loop_marks,
            prompt_tokens_at_most=prompt_tokens_at_most, api=api, characters=characters, cache_writes=cache_writes,
            needs=needs, attrs={} if attrs is _FRESH else attrs,
        )

    def prompt_range(self) -> tuple[int, int] | None:
        """``(lowest, highest)`` prompt tokens this request may have without counting it: the count
        twice once known, ``(1, prompt_tokens_at_most)`` before (a request with a message has at
        least one: LiteLLM counts 7 for one empty message), None when there is no bound."""
        if self.prompt_counted:
            n = self.prompt_tokens
            return n, n
        if self.prompt_tokens_at_most is None:
            return None
        return 1, max(1, self.prompt_tokens_at_most)

    @property
    def prompt_counted(self) -> bool:
        """Whether the prompt's tokens are known without counting them now."""
        value = self.__dict__["prompt_tokens"]
        return type(value) is int or not callable(value)

    def field_value(self, name: str) -> str | None:
        """A request field by name, for rules configured with e.g. ``sticky_by: user`` (or ``org``: a
        request attribute a scope kind declares, read from ``attrs``)."""
        if name in ("user", "team", "api_key", "end_user", "trace_id", "group"):
            value = getattr(self, name)
            return None if value is None else str(value)
        if name.startswith("metadata."):
            value = self.metadata.get(name.split(".", 1)[1])
            return None if value is None else str(value)
        if name.isidentifier():  # a declared request attribute (``attrs``); the policy checked the name
            return self.attrs.get(name)
        raise ValueError(f"unknown request field {name!r}")


@dataclass(frozen=True, slots=True)
class Drop:
    """A candidate the policy removed, who removed it, and why (in words a user can act on)."""

    deployment_id: str
    model: str
    reason: str
    by: str
    budget: str | None = None  # the budget that dropped it, when ``by`` is "budget"


_DROPS: dict[tuple[str, str, str, str, str | None], Drop] = {}


@dataclass(frozen=True, slots=True)
class Step:
    """What one rule or filter did: the new ordered candidate list and what it dropped."""

    kept: Sequence[Candidate]
    dropped: Sequence[Drop] = ()
    note: str | None = None
    #: facts about the decision worth reporting on later, e.g. ``{"split_arm": "new-model"}``
    attrs: Mapping[str, str] = field(default_factory=dict)
    #: what each candidate was judged on, by deployment id, in words (a measured ``quality_floor``:
    #: the bound and the bar), for ``explain``; not stamped on the request's metadata
    judged: Mapping[str, str] = field(default_factory=dict)

    def __init__(self, kept: Sequence[Candidate], dropped: Sequence[Drop] = (), note: str | None = None,
                 attrs: Mapping[str, str] = _FRESH, judged: Mapping[str, str] = _FRESH) -> None:  # type: ignore[assignment]
        # written out with each slot's own setter: every rule and filter that acts builds one, on every
        # decision, and the generated frozen __init__ (``object.__setattr__`` per field, a default
        # factory per mapping) cost three times this
        s = _STEP_SET
        s[0](self, kept); s[1](self, dropped); s[2](self, note)  # noqa: E702
        s[3](self, {} if attrs is _FRESH else attrs); s[4](self, {} if judged is _FRESH else judged)  # noqa: E702

    @staticmethod
    def drop(candidate: Candidate, reason: str, by: str, budget: str | None = None) -> Drop:
        # the same few drops come back on every pick (a model a rule never uses, one under the
        # bar): a Drop is immutable, so one object serves them all (bounded)
        key = (candidate.deployment_id, candidate.model, reason, by, budget)
        found = _DROPS.get(key)
        if found is None:
            if len(_DROPS) >= 50_000:
                _DROPS.clear()
            found = _DROPS[key] = Drop(*key)
        return found


#: each field's slot setter, in field order (``Step.__init__``)
_STEP_SET = tuple(getattr(Step, f.name).__set__ for f in fields(Step))


@dataclass(slots=True)
class Decision:
    """The outcome of ``Engine.decide``: candidates to try in order, and every drop with its reason."""

    request: RouteRequest
    ordered: list[Candidate]
    dropped: list[Drop]
    notes: list[str]
    attrs: dict[str, str] = field(default_factory=dict)
    governed: bool = True  # False when no route matched: LiteLLM's own selection applies
    #: what each candidate was judged on, by deployment id (``Step.judged`` of every step)
    judged: dict[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return self.ordered[0] if self.ordered else None

    def as_dict(self, compact: bool = False) -> dict[str, Any]:
        """A JSON-able summary, printed by ``explain``. ``compact`` (what the adapter stamps on every
        request's metadata) leaves out the per-candidate price rows, which LiteLLM would otherwise copy
        into its logging payload on every request; the order and every drop reason stay. It does not
        count the prompt: ``prompt_tokens`` is None when nothing in the decision needed the count."""
        req = self.request
        out = {
            "group": req.group,
            "governed": self.governed,
            "chosen": self.chosen.deployment_id if self.chosen else None,
            "chosen_model": self.chosen.model if self.chosen else None,
            "order": [c.deployment_id for c in self.ordered],
            "candidates": [] if compact else [_candidate_row(c, req, "kept") for c in self.ordered],
            "dropped": [
                {"deployment_id": d.deployment_id, "model": d.model, "by": d.by, "reason": d.reason}
                for d in self.dropped
            ],
            "notes": list(self.notes),
            "attrs": dict(self.attrs),
            "prompt_tokens": req.prompt_tokens if (req.prompt_counted or not compact) else None,
            "output_tokens": req.output_tokens,
        }
        if compact:
            del out["candidates"]
        else:
            out["judged"] = dict(self.judged)
            for row in out["candidates"]:
                if row["deployment_id"] in self.judged:
                    row["judged"] = self.judged[row["deployment_id"]]
            for row in out["dropped"]:
                if row["deployment_id"] in self.judged:
                    row["judged"] = self.judged[row["deployment_id"]]
        return out


def _candidate_row(c: Candidate, req: RouteRequest, verdict: str) -> dict[str, Any]:
    row: dict[str, Any] = {"deployment_id": c.deployment_id, "model": c.model, "verdict": verdict}
    if c.priced:
        row["estimate_usd"] = c.estimate_usd(req.prompt_tokens, req.output_tokens)
        row["usd_per_1k"] = c.usd_per_1k(req.prompt_tokens, req.output_tokens)
    return row


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished attempt, as LiteLLM reported it to the success/failure callbacks."""

    group: str
    deployment_id: str | None
    model: str | None
    ok: bool
    cost_usd: float
    latency_s: float | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: BaseException | None = None
    trace_id: str | None = None
    decision: Mapping[str, Any] | None = None
    #: True when the provider's answer reported no usage and the tokens and cost above are the
    #: plugin's estimate (LiteLLM's token counter x the deployment's price), not the provider's counts
    usage_estimated: bool = False
