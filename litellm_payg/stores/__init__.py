"""Where state and facts live: the spend ledger and the deployments' health, per backend, and
the prices and prompt token counts of models (read-only facts, asked of the price source port
``core/price_source.py``, which the adapter fills with LiteLLM's price map and token counter).

``ledger`` (memory, SQLite, Redis; ``open_ledger(url)``), ``health`` (breaker and latency state per
deployment; ``open_health(url)``), ``schemes`` (the one table of URL schemes both open), the shared
Redis client and ``prices``. Nothing here decides anything: the runtime asks, the stores answer.

May import: ``core`` only (and its drivers: sqlite3, redis; never LiteLLM).
"""
