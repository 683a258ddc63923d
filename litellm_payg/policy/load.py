"""Policy files: YAML (or a dict) in, validated typed objects out.

Every error names the file, the line and the dotted field, and says what was expected; all errors of
a file are reported at once. ``litellm-payg check FILE`` prints them and exits 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pluggy
import yaml
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from litellm_payg.core.bounds import Seconds, Tokens, Usd
from litellm_payg.wire.request_fields import allowable
from litellm_payg.core.budgets import Budget
from litellm_payg.policy.failover import FailoverSettings, ValidatorSpec
from litellm_payg.policy.quality import QualitySettings
from litellm_payg.policy.validators import build_validators

from litellm_payg.core.errors import PluginError, PolicyError, Problem
from litellm_payg.core.model_facts import ModelFacts
from litellm_payg.plugins import builtin_scopes, make_plugin_manager, rule_types, scope_registry
from litellm_payg.core.scopes import ScopeRegistry
from litellm_payg.wire.identity import DEFAULT_SESSION_SOURCES, LITELLM_METADATA_PREFIX, check_session_source
from litellm_payg.core.conditions import When, WhenError
from litellm_payg.rules import RuleSpec

Path_ = tuple[str | int, ...]


class _Strict(BaseModel):
    # nan/inf are never a meaningful policy number (see bounds.py)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class Defaults(_Strict):
    """Assumptions for requests that do not say: used in price estimates and reservations."""

    #: output tokens assumed for *routing* when a request gives no max_tokens
    expected_output_tokens: Tokens = 256
    #: output tokens *reserved* against budgets when neither the request nor the model (its
    #: ``max_output_tokens``) says how many the provider may produce
    reserve_output_tokens: Tokens = 4096


DEFAULT_LEDGER = "sqlite:///payg-ledger.db"


def _allowable(name: str) -> str:
    why = allowable(name)
    if why is not None:
        raise ValueError(f"{name!r} cannot be allowed: {why}")
    return name


class RequestSettings(_Strict):
    """``requests:``: the request surface of governed groups (:mod:`litellm_payg.wire.request_fields`).

    ``allow_fields`` adds body fields the plugin does not know (or ones it refuses because their
    cost is not bounded, such as ``service_tier``) and ``extra_body.<field>`` keys; a field that
    re-routes the call cannot be added. ``unbounded_reserve_usd`` is what a request whose cost the
    plugin cannot bound (a deployment without a price for what the request is billed by) reserves;
    without it such a request is refused with a 400 that says why."""

    allow_fields: list[Annotated[str, AfterValidator(_allowable)]] = Field(default_factory=list)
    unbounded_reserve_usd: Usd | None = None


class RunOperators(_Strict):
    """``sessions.operators``: who may read every run and close or grant any run at the proxy's
    run-control endpoint besides the proxy's admins (its master key, LiteLLM's ``proxy_admin``
    role): keys by hash, teams, users, as the authenticated key has them."""

    key: list[str] = Field(default_factory=list)
    team: list[str] = Field(default_factory=list)
    user: list[str] = Field(default_factory=list)


class SessionSettings(_Strict):
    """``sessions:``: where a request's session id (its run) is read from, first found wins."""

    id_from: list[str] = Field(default_factory=lambda: list(DEFAULT_SESSION_SOURCES), min_length=1)
    #: whose a run is: the key that started it (default), its team, or ``shared`` by every key
    #: that names the same session id (``identity.run_of``)
    owner: Literal["key", "team", "shared"] = "key"
    #: whether a governed request must name a run: ``true`` (every one), ``false`` (the default), or a
    #: ``when:`` (those it matches, e.g. ``{key: ...}`` or ``{tags: [agent]}``); one without is a 400
    required: bool | dict[str, Any] = False
    #: who besides the proxy's admins controls runs (``adapter/run_control.py``)
    operators: RunOperators = Field(default_factory=lambda: RunOperators())
    #: for clients that cannot send a run id: a request from a key that names none counts in the
    #: key's own minted run (``identity.minted_session``), said in the ``x-payg-run-minted`` header
    mint: bool = False

    @field_validator("id_from")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for source in value:
            check_session_source(source)
        return value


class _PolicyDocument(_Strict):
    version: Literal[1]
    plugins: list[str] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    models: dict[str, ModelFacts] = Field(default_factory=dict)
    routes: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    ledger: str = DEFAULT_LEDGER
    timezone: str = "UTC"
    budgets: list[Budget] = Field(default_factory=list)
    on_ledger_error: Literal["fail_closed", "fail_open"] | None = None
    direct_deployments: Literal["refuse", "route"] = "refuse"
    reservation_ttl_s: Seconds = 900
    alert_webhook: str | None = None
    failover: FailoverSettings | None = None
    validate_: list[ValidatorSpec] = Field(default_factory=list, alias="validate")
    sessions: SessionSettings = Field(default_factory=lambda: SessionSettings())
    requests: RequestSettings = Field(default_factory=lambda: RequestSettings())
    quality: QualitySettings = Field(default_factory=lambda: QualitySettings())

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. UTC, Europe/Paris, America/New_York)") from None
        return value

    @field_validator("ledger")
    @classmethod
    def _ledger_url(cls, value: str) -> str:
        from litellm_payg.stores.schemes import parse_store_url

        parse_store_url(value, "ledger")  # StoreURLError is a ValueError: pydantic reports it with the field
        return value

    @model_validator(mode="after")
    def _distinct_budget_ids(self) -> "_PolicyDocument":
        ids = [b.budget_id(i) for i, b in enumerate(self.budgets)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"budget names must be distinct, repeated: {', '.join(dupes)}")
        return self

@dataclass
class Policy:
    """A validated policy. ``routes`` maps a LiteLLM model group to its rules, in order."""

    version: int
    defaults: Defaults
    models: dict[str, ModelFacts]
    routes: dict[str, list[RuleSpec]]
    plugins: list[str]
    plugin_manager: pluggy.PluginManager
    #: the scope kinds the policy's plugins register (``payg_register_scopes``)
    scopes: ScopeRegistry = field(default_factory=lambda: builtin_scopes())
    source: str | None = None
    lines: dict[Path_, int] = field(default_factory=dict, repr=False)
    ledger: str = DEFAULT_LEDGER
    timezone: str = "UTC"
    budgets: list[Budget] = field(default_factory=list)
    on_ledger_error: str = "fail_open"
    #: a request whose ``model`` names a deployment (its id or model string) instead of a group:
    #: ``refuse`` it with a 400 naming the group to use, or ``route`` it as a request to that group
    direct_deployments: str = "refuse"
    reservation_ttl_s: float = 900
    alert_webhook: str | None = None
    failover: FailoverSettings | None = None
    #: built response validators (``validate:``), checked on every successful non-stream answer
    validators: list[Any] = field(default_factory=list)
    #: where a request's session id is read from (``sessions: {id_from: [...]}``), first found wins
    session_sources: tuple[str, ...] = DEFAULT_SESSION_SOURCES
    #: body fields the operator accepts beyond the known ones (``requests.allow_fields``)
    allow_fields: frozenset[str] = frozenset()
    #: the reservation of a request whose cost cannot be bounded; None: refuse it (400)
    unbounded_reserve_usd: float | None = None
    #: whose a run is (``sessions: {owner: key | team | shared}``), see ``identity.run_of``
    run_owner: str = "key"
    #: ``sessions.required``: None (a run id is optional), or the ``When`` of the requests that must
    #: name one (an empty ``When`` matches every request)
    session_required: When | None = None
    #: ``sessions.mint``: a keyed request that names no run counts in its key's minted run
    session_mint: bool = False
    #: ``sessions.operators``: keys (hashes), teams and users that control every run, by kind
    run_operators: dict[str, frozenset[str]] = field(default_factory=dict)
    #: ``quality:``: how answers' evidence is kept and judged (``policy/quality.py``)
    quality: QualitySettings = field(default_factory=QualitySettings)
    #: whether the policy has a ``quality:`` section (then the validators' verdicts are kept as
    #: evidence even before a rule judges on them)
    quality_configured: bool = False

    def line_of(self, path: Path_) -> int | None:
        return _nearest_line(self.lines, path)


def load_policy(src: str | Path | Mapping[str, Any], *, deployments_known: bool = False) -> Policy:
    """Load a policy from a YAML file path or an already parsed mapping.

    ``deployments_known``: the caller checks the policy against the deployments it will govern
    (``Engine.check_deployments``: ``attach``, the proxy, ``check --config``), which first says
    whether a model a rule names is in its group at all ("did you mean"), then prices each
    deployment as LiteLLM does, from its own ``model_info`` too. The load then leaves the price check
    to that: a rule may name a deployment id (``use: instance_A_65k``) that no price map knows.
    Without deployments, a model a cost rule names must be priced by LiteLLM's map or the policy."""
    if isinstance(src, Mapping):
        return parse_policy(src, source=None, lines={}, base_dir=Path.cwd(), check_prices=not deployments_known)
    path = Path(src)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem("", f"cannot read policy file: {exc.strerror or exc}")], str(path)) from None
    data, lines = _parse_yaml(text, str(path))
    return parse_policy(data, source=str(path), lines=lines, base_dir=path.resolve().parent,
                        check_prices=not deployments_known)


def _refuse_litellm_metadata_fields(scopes: ScopeRegistry) -> None:
    """A plugin's client-asserted request attribute may not read a metadata field LiteLLM's proxy
    auth writes (``user_api_key_*``): that is the key's, declared with ``key_field``."""
    for kind in scopes.door_filled():
        if kind.metadata_field is not None and kind.metadata_field.startswith(LITELLM_METADATA_PREFIX):
            raise PluginError(f"request attribute {kind.name!r}: metadata.{kind.metadata_field} is LiteLLM's own "
                              f"(declare it with key_field={kind.metadata_field[len(LITELLM_METADATA_PREFIX) + 1:]!r})")


def parse_policy(data: Any, source: str | None, lines: dict[Path_, int], base_dir: Path,
                 check_prices: bool = True) -> Policy:
    if not isinstance(data, Mapping):
        raise PolicyError(
            [Problem("", f"expected a mapping with 'version: 1' and 'routes:', got {type(data).__name__}", 1)],
            source,
        )
    # the plugins first: the scope kinds the budgets, conditions and rules may name are theirs
    raw_plugins = data.get("plugins", [])
    pm: pluggy.PluginManager | None = None
    plugin_error: PolicyError | None = None
    if isinstance(raw_plugins, list) and all(isinstance(ref, str) for ref in raw_plugins):
        try:
            pm = make_plugin_manager(raw_plugins, base_dir)
            scopes = scope_registry(pm)
            _refuse_litellm_metadata_fields(scopes)
        except PluginError as exc:
            plugin_error = PolicyError([Problem("plugins", str(exc), _nearest_line(lines, ("plugins",)))], source)
    if pm is None or plugin_error is not None:
        scopes = builtin_scopes()
    try:
        doc = _PolicyDocument.model_validate(data, context={"scopes": scopes})
    except ValidationError as exc:
        raise PolicyError(_problems(exc, (), lines), source) from None
    if plugin_error is not None:
        raise plugin_error
    assert pm is not None  # the document's plugins are a list of strings once it validated
    try:
        known = rule_types(pm)
    except PluginError as exc:
        raise PolicyError([Problem("plugins", str(exc), _nearest_line(lines, ("plugins",)))], source) from None

    problems: list[Problem] = []
    routes: dict[str, list[RuleSpec]] = {}
    for group, entries in doc.routes.items():
        specs: list[RuleSpec] = []
        for index, entry in enumerate(entries):
            where: Path_ = ("routes", group, index)
            when = None
            if "when" in entry:  # a condition on the rule entry (core.conditions.When); the rest is the rule
                raw_when, entry = entry["when"], {k: v for k, v in entry.items() if k != "when"}
                try:
                    when = When.parse(raw_when, scopes, reserved_metadata=(LITELLM_METADATA_PREFIX,))
                except WhenError as exc:
                    at = (*where, "when", *exc.path)
                    problems.append(Problem(_dotted(at), exc.message, _nearest_line(lines, at), hint=exc.hint))
            if len(entry) != 1:
                problems.append(Problem(
                    _dotted(where),
                    f"each rule is a mapping with exactly one key (the rule type) besides an optional 'when', "
                    f"got keys {sorted(entry)}",
                    _nearest_line(lines, where),
                    hint="write '- cost_threshold: {...}' with the options indented under the rule name"
                    + (" (a 'when:' limits the rule written next to it)" if when is not None or not entry else ""),
                ))
                continue
            (name, options), = entry.items()
            rule_path = (*where, name)
            rule_type = known.get(name)
            if rule_type is None:
                problems.append(Problem(
                    _dotted(rule_path),
                    f"unknown rule type {name!r}; expected one of {', '.join(sorted(known))}",
                    _nearest_line(lines, rule_path),
                    hint="a plugin can add rule types: list its module under 'plugins:'",
                ))
                continue
            try:
                parsed = rule_type.Options.model_validate(options if options is not None else {}, context={"scopes": scopes})
            except ValidationError as exc:
                problems.extend(_problems(exc, rule_path, lines))
                continue
            specs.append(RuleSpec(name, parsed, _dotted(rule_path), _nearest_line(lines, rule_path), rule_type, when))
        routes[group] = specs
    conditions: dict[Path_, When] = {}  # the `when:`s outside routes, checked with their own file:line
    wanted: list[tuple[Path_, Any]] = [(("budgets", i, "final_reserve", "when"), b.final_reserve.when)
                                       for i, b in enumerate(doc.budgets) if b.final_reserve is not None]
    wanted += [(("budgets", i, "when"), b.when) for i, b in enumerate(doc.budgets) if b.when is not None]
    if isinstance(doc.sessions.required, dict):
        wanted.append((("sessions", "required"), doc.sessions.required))
    for where, raw in wanted:
        try:
            conditions[where] = When.parse(raw, scopes, reserved_metadata=(LITELLM_METADATA_PREFIX,))
        except WhenError as exc:
            at = (*where, *exc.path)
            problems.append(Problem(_dotted(at), exc.message, _nearest_line(lines, at), hint=exc.hint))
    if problems:
        raise PolicyError(problems, source)

    policy = Policy(
        version=doc.version,
        defaults=doc.defaults,
        models=dict(doc.models),
        routes=routes,
        plugins=list(doc.plugins),
        plugin_manager=pm,
        scopes=scopes,
        source=source,
        lines=lines,
        ledger=doc.ledger,
        timezone=doc.timezone,
        budgets=list(doc.budgets),
        on_ledger_error=doc.on_ledger_error
        or ("fail_closed" if any(b.on_exceed == "block" for b in doc.budgets) else "fail_open"),
        direct_deployments=doc.direct_deployments,
        reservation_ttl_s=doc.reservation_ttl_s,
        alert_webhook=doc.alert_webhook,
        failover=doc.failover,
        session_mint=doc.sessions.mint,
        session_sources=tuple(doc.sessions.id_from),
        allow_fields=frozenset(doc.requests.allow_fields),
        unbounded_reserve_usd=doc.requests.unbounded_reserve_usd,
        run_owner=doc.sessions.owner,
        session_required=conditions.get(("sessions", "required"))
        or (When(()) if doc.sessions.required is True else None),
        run_operators={kind: frozenset(getattr(doc.sessions.operators, kind)) for kind in ("key", "team", "user")},
        quality=doc.quality,
        quality_configured="quality" in doc.model_fields_set,
    )
    try:
        policy.validators = build_validators(doc.validate_, base_dir)
    except (ValueError, OSError) as exc:
        raise PolicyError([Problem("validate", str(exc), _nearest_line(lines, ("validate",)))], source) from None
    if check_prices:
        _check_prices(policy)
    return policy


def _check_prices(policy: Policy) -> None:
    """Unknown price is an error at load time when a cost rule names the model."""
    from litellm_payg.stores.prices import close_model_names, lookup_price  # the price source port (LiteLLM's map by default)

    problems = []
    for group, specs in policy.routes.items():
        for spec in specs:
            if not spec.rule_type.needs_prices:
                continue
            rule = spec.build(group, policy.models)
            for field_path, ref in rule.model_refs():
                if lookup_price(ref, policy.models) is None:
                    close = close_model_names(ref, policy.models)
                    price_hint = f"add 'models: {{{ref}: {{input_usd_per_1k: ..., output_usd_per_1k: ...}}}}' to the policy"
                    problems.append(Problem(
                        field_path,
                        f"no known price for model {ref!r}: it is not in LiteLLM's price map and the policy gives none"
                        + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""),
                        policy.line_of(_undotted(field_path)) or spec.line,
                        hint=(f"check the name against the group's deployments (litellm-payg check POLICY --config "
                              f"config.yaml); if {ref!r} is right, {price_hint}") if close else
                        price_hint + "; a deployment priced in its model_info (input_cost_per_token, output_cost_per_token "
                        "or base_model) is checked with --config config.yaml",
                    ))
    if problems:
        from litellm_payg.core.errors import UnknownPriceError

        raise UnknownPriceError(problems, policy.source)


# -- YAML with line numbers -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([Problem("", f"not valid YAML: {what}", line, hint=_yaml_hint(text, line))], source) from None
    if node is None:
        raise PolicyError([Problem("", "the file is empty; expected 'version: 1' and 'routes:'", 1)], source)
    lines: dict[Path_, int] = {}
    _index_lines(node, (), lines)
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise PolicyError([Problem("", f"not valid YAML: {exc}")], source) from None
    finally:
        loader.dispose()
    return data, lines


def _yaml_hint(text: str, line: int | None) -> str | None:
    """What to do about a YAML error on a line holding a URL: a ``:`` followed by a space or the end
    of the line, as in ``?prefix=payg:``, starts a mapping in plain YAML ("mapping values are not
    allowed here"), so such a value must be quoted."""
    if line is None:
        return None
    lines = text.splitlines()
    if not 0 < line <= len(lines) or "://" not in lines[line - 1]:
        return None
    key, _, value = lines[line - 1].partition(": ")
    value = value.split(" #", 1)[0].strip()
    return (f"quote the URL: a ':' at the end of it (or before a space) starts a YAML mapping, e.g. "
            f"{key.strip()}: \"{value}\"")


def _index_lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if key_node.tag == "tag:yaml.org,2002:bool" and key in ("on", "On", "ON"):
                key = "on"  # YAML 1.1 reads a bare `on:` key as True; the policy means "on"
            out[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out)


def _nearest_line(lines: Mapping[Path_, int], path: Path_) -> int | None:
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _undotted(dotted: str) -> Path_:
    parts: list[str | int] = []
    for chunk in dotted.replace("]", "").split("."):
        name, *indices = chunk.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices)
    return tuple(parts)


def _problems(exc: ValidationError, prefix: Path_, lines: Mapping[Path_, int]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        path = (*prefix, *loc)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "this field is required"
        if (
            "input" in err
            and err["type"] not in ("missing",)
            and not isinstance(err["input"], (dict, list))
            and "got " not in message  # our own validators already say what they got
        ):
            message += f" (got {err['input']!r})"
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        hint = None
        if err["type"] in ("finite_number", "less_than_equal"):
            hint = "every policy number is finite and bounded (see 'Bounds' in the README's policy reference)"
        problems.append(Problem(_dotted(path), message, _nearest_line(lines, path), hint=hint))
    return problems
