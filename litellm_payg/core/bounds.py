"""The bounds every number in a policy must respect: finite, and inside a range no real use leaves.

Why bounds at all: a policy number flows into arithmetic the ledger must store exactly (integer
nano-dollars in a signed 64-bit SQLite or Redis integer, at most about 9.2e9 USD per counter) and
into timers (Redis key TTLs in milliseconds). ``limit_usd: 1e308`` used to pass ``check`` and then
fail every request with a 500 when the ledger converted it; ``.inf`` or ``.nan`` did the same. A
policy error at load time names the field; a 500 per request names nothing.

Each bound is chosen with a wide margin over real use (checked against LiteLLM's price map):

* ``MAX_USD`` = 1e9 USD, for any amount of money (a budget limit). 1e9 USD is 1e18 nano-dollars,
  under 2**63 (about 9.2e18) with room for an alert/track counter to keep counting past a limit.
* ``MAX_USD_PER_1K`` = 1000 USD per 1k tokens, for prices and price thresholds. The dearest model
  in LiteLLM's price map costs 0.6 USD per 1k output tokens (o1-pro): this is 1600x that. With
  ``MAX_TOKENS`` it keeps one request's estimate (2 x 1e8/1e3 x 1000 = 2e8 USD) under ``MAX_USD``.
* ``MAX_TOKENS`` = 1e8 tokens, for token counts. The largest context window in the price map is
  about 1e7 tokens (Llama 4 Scout).
* ``MAX_SECONDS`` = 30 days, for durations (reservation TTL, breaker and latency windows); the
  ``_ms`` settings are the same in milliseconds. A rolling budget window may be up to 366 days.
* ``MAX_COUNT`` = 1e6, for counts (breaker failures and probes, latency samples kept).
* ``MAX_SCORE`` = 1e6, for quality scores and split weights: any scale people use (0-1, 0-100,
  arena Elo in the thousands, weights in parts per million) fits.

Third-party rule options inherit ``allow_inf_nan=False`` from :class:`~litellm_payg.rules.RuleOptions`;
their own ranges are theirs to declare (these constants are public for that).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_USD = 1e9
MAX_USD_PER_1K = 1e3
MAX_TOKENS = 100_000_000
MAX_SECONDS = 30 * 86400
MAX_MS = MAX_SECONDS * 1000
MAX_ROLLING_WINDOW_S = 366 * 86400
MAX_COUNT = 1_000_000
MAX_SCORE = 1e6

#: pydantic field types for the bounded numbers (floats also refuse nan and inf)
Usd = Annotated[float, Field(gt=0, le=MAX_USD, allow_inf_nan=False)]
UsdPer1k = Annotated[float, Field(ge=0, le=MAX_USD_PER_1K, allow_inf_nan=False)]
PositiveUsdPer1k = Annotated[float, Field(gt=0, le=MAX_USD_PER_1K, allow_inf_nan=False)]
Tokens = Annotated[int, Field(gt=0, le=MAX_TOKENS)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
Millis = Annotated[int, Field(gt=0, le=MAX_MS)]
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Score = Annotated[float, Field(ge=0, le=MAX_SCORE, allow_inf_nan=False)]
Weight = Annotated[float, Field(gt=0, le=MAX_SCORE, allow_inf_nan=False)]
