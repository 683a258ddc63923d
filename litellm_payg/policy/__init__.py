"""The policy file: its schema and its loading, with file:line on every error.

``load`` reads a YAML policy into a :class:`~litellm_payg.policy.load.Policy` (routes, models, budgets,
plugins), ``failover`` is the schema of its ``failover:`` section and ``validators`` of its
``validate:`` section. A policy is the operator's config: the only input here that is trusted.

May import: ``core``, the plugin contract (``hookspecs``, ``hook_chain``, ``rules``, ``plugins``)
and ``stores.prices`` (to refuse a cost rule on a model nobody prices). ``tests/test_layers.py``
checks it.
"""
