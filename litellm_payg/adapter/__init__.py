"""Everything that speaks LiteLLM: the Router callback (``routing``), the governed entry points
(``ingress``), the proxy handler (``proxy``), what an answer costs (``charges``), what a failure
was (``failures``), the repairs for LiteLLM releases (``litellm_fixes``) and their differences
(``litellm_versions``), Prometheus metrics (``metrics``), the bridge for sync calls, and
LiteLLM's price map and token counter as the price source the layers below read
(``litellm_prices``, the implementation of ``core/price_source.py``).

May import every layer below it (``core``, contract, ``policy``, ``stores``, ``runtime``), never
``tools``.
"""
