"""Where state and facts live: the spend ledger and the deployments' health, per backend, and
LiteLLM's price map and token counter (read-only facts about models).

``ledger`` (memory, SQLite, Redis; ``open_ledger(url)``), ``health`` (breaker and latency state per
deployment; ``open_health(url)``), ``schemes`` (the one table of URL schemes both open), the shared
Redis client and ``prices``. Nothing here decides anything: the runtime asks, the stores answer.

May import: ``core`` only (and its drivers: sqlite3, redis, LiteLLM's price map).
"""
