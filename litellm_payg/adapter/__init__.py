"""Everything that speaks LiteLLM: the Router callback (``routing``), the governed entry points
(``ingress``), the proxy handler (``proxy``), what an answer costs (``charges``), what a failure
was (``failures``), the repairs for LiteLLM releases (``litellm_fixes``) and their differences
(``litellm_versions``), Prometheus metrics (``metrics``) and the bridge for sync calls.

May import every layer below it (``core``, contract, ``policy``, ``stores``, ``runtime``), never
``tools``.
"""
