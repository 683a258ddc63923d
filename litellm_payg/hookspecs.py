"""The plugin contract: every hook a litellm-payg plugin may implement.

Each hook is documented here, where it is declared. Call sites always pass keyword arguments, so an
implementation may accept any subset of the arguments listed, and new arguments can be added later
without breaking existing plugins. The built-in rules in ``litellm_payg.default_plugins`` use these
same hooks: nothing a built-in does is closed to a third-party plugin.

A hook gets values (the request, the candidates, the decision, a read-only ``snapshot``, the
``policy``) and answers with values (a ``Step``, a list of problems, ``Evidence``); what is written
to a store (spend, health, evidence, exploration) is written by the runtime, never by an
implementation. The ``engine`` argument some hooks still take is deprecated, kept so that plugins
written for it keep loading (pluggy refuses an implementation naming an argument its spec lacks):
no built-in plugin (``plugins.DEFAULT_PLUGINS``) takes it, and ``tests/test_layers.py`` fails if one
does.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("litellm_payg")
hookimpl = pluggy.HookimplMarker("litellm_payg")


@hookspec
def payg_register_rules(register):
    """Register rule types that a policy file can name in a route.

    Call ``register(RuleClass)`` once per rule type. ``RuleClass`` has a class attribute ``name``
    (the key used in the policy file, e.g. ``cost_threshold``), a pydantic model ``Options``
    (validated from the policy; give it ``extra="forbid"``), and is constructed as
    ``RuleClass(options, context)`` with a :class:`litellm_payg.rules.RuleContext`. Its
    ``apply(request, candidates)`` returns a :class:`litellm_payg.core.decision.Step`. See
    ``litellm_payg/rules.py`` for the full protocol and ``default_plugins/`` for examples.

    Any rule entry may carry a ``when:`` condition; the engine decides whether the rule applies to
    a request (``Engine.rules_for``), so a rule type implements nothing for it (its own condition
    is ``context.when``).
    """


@hookspec
def payg_register_scopes(register):
    """Register scope kinds: the request (or deployment) attributes a budget can be written for
    (``scope: <kind>:<value>``), and the one declaration of each.

    Call ``register(kind)`` once per kind, with a :class:`litellm_payg.core.scopes.ScopeKind`; for
    an attribute of the request, :func:`litellm_payg.core.scopes.request_attribute` makes one, e.g.
    ``request_attribute("org", key_field="org_id", doc=...)``: the authenticated key's ``org_id``,
    which the adapter reads at the door (in the proxy from the key LiteLLM authenticated or the
    ``user_api_key_org_id`` field its auth writes; in the SDK, from the calling code's
    ``metadata["org"]``) into ``RouteRequest.attrs``. A kind given ``key_field`` is trusted; one
    given ``metadata_field`` instead (``request_attribute("region", metadata_field="region", ...)``)
    is what the client asserts in its request's metadata: it caps honest traffic, never a hostile
    client. Once registered, a kind is everywhere a kind is named: budget
    ``scope:``, ``when:`` conditions (unless ``when=False``), ``sticky_by``, the spend records and
    ``report``/``replay`` filters, the metrics' budget gauges, ``explain --<kind>`` and
    ``simulate``'s traffic fields. The built-in kinds are registered by
    ``litellm_payg/default_plugins/scopes.py``. A name registered twice is an error naming both
    plugins.
    """


@hookspec
def payg_filter_candidates(request, candidates, snapshot, engine):
    """Narrow or reorder the candidates of *every* request, after the route's rules (whichever
    ``when:`` matched, and also for a request that no rule applied to).

    For policy-wide concerns that are not a rule of one route (budget headroom, circuit breakers).
    Return ``None`` to leave the candidates alone, or a :class:`litellm_payg.core.decision.Step` whose
    ``kept`` is the new ordered list and whose ``dropped`` says why each removed candidate went.
    All implementations run, in pluggy order (``tryfirst``/``trylast`` to order them; the built-in
    filters are ``trylast``); each sees the previous one's result. The hook is called as a chain,
    one pluggy call per implementation (``litellm_payg/hook_chain.py``): a ``wrapper=True``
    implementation wraps each of those calls, seeing its result list (``[]`` or ``[Step]``) and
    able to replace it.

    ``snapshot`` is the :class:`litellm_payg.core.snapshot.Snapshot` the decision is made from: the
    clock's ``now``, the ``policy``, each candidate's ``downgrade`` budgets with their ``usage``
    (``litellm_payg.core.headroom.headroom`` turns them into drops), each deployment's breaker and
    latency state (``health``), and ``ledger_error``/``health_error`` when a store could not be
    read. A filter should read only the request, the candidates and the snapshot, so that a
    decision is a pure function of them and the policy (replayable, testable without stores).

    ``engine`` (deprecated, kept so filters written for it keep working) is the
    :class:`litellm_payg.runtime.engine.Engine` deciding. Reading a store through it (``engine.spend``,
    ``engine.health``) makes the decision depend on more than its snapshot; no built-in does (the
    opt-in ``litellm_payg.adapter.metrics`` only keys its scrape-time gauges by it).
    """


@hookspec
def payg_decision(request, decision, engine):
    """Observe a routing decision once it is made (log it, count it, export it).

    Called once per attempt, including retries and fallback hops, with the pick the attempt was
    actually sent to: ``decision.chosen`` is that deployment, after failover, circuit breakers and
    the budget reservation narrowed the rules' order, and ``decision.dropped`` says why each other
    candidate was not chosen (a rule, a budget, an earlier attempt). ``explain`` and ``simulate``
    call it once per decision. Must not raise and must not block: it runs on the request path.

    A pick ``quality_floor`` made to explore (``decision.attrs["quality_explore"]``) is already
    charged to its route's exploration budget when observers hear of it: the engine does that
    itself (``Engine.observe``), not an observer.

    ``engine`` (deprecated, kept so observers written for it keep loading) is the deciding
    :class:`litellm_payg.runtime.engine.Engine`; no built-in takes it, and an observer must not
    write through it.
    """


@hookspec
def payg_outcome(outcome):
    """Observe the outcome of one attempt: the deployment that actually ran, its real cost
    (LiteLLM's ``response_cost``), latency, and whether it failed and how.

    ``outcome`` is a :class:`litellm_payg.core.decision.Outcome`. Called from LiteLLM's success/failure
    callbacks, which LiteLLM runs on a background worker shortly after the caller got its answer.
    ``outcome.usage_estimated`` is True when the cost is the plugin's estimate rather than the
    provider's counts: an answer without usage, or a failure after the provider answered (which
    then has a non-zero cost although ``ok`` is False).
    """


@hookspec
def payg_budget_alert(budget, bucket, scope, threshold, spent_usd, limit_usd, resets_at, policy):
    """A budget's spend crossed one of its ``alert_at`` fractions (or, for ``on_exceed: alert``,
    its limit). Fires once per threshold per window, across every replica sharing the ledger.

    ``budget`` is the :class:`litellm_payg.core.budgets.Budget` from the policy, ``bucket`` the ledger key
    of the window's counter, ``scope`` the concrete scope (``user:alice``), ``threshold`` the
    fraction crossed, ``resets_at`` when the window ends (None for rolling windows). Built-in
    implementations log a warning and POST to the policy's ``alert_webhook``. Runs after a charge
    is settled, off the request path; must not raise.
    """


@hookspec
def payg_validate_response(response, request, policy, engine):
    """Check a successful answer before it counts as a success.

    ``response`` is the LiteLLM ``ModelResponse`` of a non-streaming call; ``request`` the
    :class:`litellm_payg.core.decision.RouteRequest`; ``policy`` the loaded
    :class:`litellm_payg.policy.load.Policy` (read it, do not change it). Return ``None`` when
    satisfied, or a list of problems (plain sentences naming what is wrong). All implementations
    run; the problems are concatenated. Any problem makes the attempt fail with
    :class:`litellm_payg.adapter.failures.InvalidResponseError` (class ``invalid_response``): the answer is
    still charged (it billed), the failure counts against the deployment's circuit breaker, and the
    request moves on as ``failover.on.invalid_response`` says. Runs on the request path: must not
    block. The built-in implementation runs the policy's ``validate:`` list (``policy.validators``).
    ``engine`` is deprecated (see the module docstring): no built-in takes it.
    """


@hookspec
def payg_answer_checked(request, candidate, problems, policy, engine):
    """A successful non-stream answer went through every ``payg_validate_response`` check.

    ``candidate`` is the :class:`litellm_payg.core.decision.Candidate` that answered, ``problems``
    the list the checks found (empty: the answer passed), ``policy`` the loaded policy. Called
    whether or not it passed, after the checks and before a rejected answer fails its attempt.

    Return ``None``, or measured-quality evidence about the answer: a
    :class:`litellm_payg.core.quality.Evidence` (``metric``, ``value``, ``source``) or a list of
    them. The runtime records each for ``candidate``'s route and deployment, in the request's class
    (``quality.class_by``), when the policy collects evidence (a ``quality:`` section or a measured
    ``quality_floor``); evidence it cannot record (a metric the policy does not take, a value of the
    wrong kind, a store down) is logged and dropped. The built-in ``quality_evidence`` plugin returns
    the verdict as metric ``valid`` when the policy has validators. Runs on the request path: must
    not block; must not raise. ``engine`` is deprecated (see the module docstring): no built-in
    takes it, and an implementation must not write through it.
    """
