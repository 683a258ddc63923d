"""The pure core: the data a decision is made of and the decisions and checks made on it.

Candidates, steps and decisions (``decision``), budgets and their windows (``budgets``), what a
filter may read of the world (``snapshot``) and the budget headroom computed from it
(``headroom``), who a request belongs to (``identity``), the policy's number bounds (``bounds``)
and model facts (``model_facts``), what a ledger counts (``buckets``), the circuit breaker's state
machine (``breaker``), and the error tree (``errors``).

The rule of this layer: no LiteLLM, no HTTP client, no Redis, no SQLite, no I/O of any kind, and
nothing of the package outside it. Nor LiteLLM's wire format: the core works on the plugin's own
request attributes (``RouteRequest``, ``RequestIdentity``); where LiteLLM keeps them in a request is
read in ``wire/`` and ``adapter/``. It is
what ``Engine.decide`` given a snapshot, ``explain`` and the request checks run on, so it stays fast
and testable without a network; ``tests/test_layers.py`` fails, naming the import chain, if any
module here reaches one of those.
"""
