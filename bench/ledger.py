"""Throughput and added latency of one reserve+settle, per ledger backend.

    python bench/ledger.py [--seconds 2.5] [--redis redis://127.0.0.1:6379/0]

Every request under budget control pays one reserve (before the call) and one
settle (after it); that pair is what we time, against two buckets (a global
cap and a per-user cap) like a typical policy. Ratios are against baselines
measured in the same run:

* the memory backend (pure bookkeeping cost), and
* LiteLLM's own budget bookkeeping primitive -- a spend read plus an
  increment, which is what ``router_strategy.budget_limiter`` does per
  request -- on DualCache's in-memory cache and on LiteLLM's RedisCache.
  That baseline checks and increments non-atomically and reserves nothing,
  so it is the "no guarantees" floor, not an equivalent.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from litellm_payg.stores.ledger import Bucket, open_ledger  # noqa: E402

BUCKETS = [Bucket("bench|global|day|x", 1e9, True), Bucket("bench|user:u|day|x", 1e9, True)]


def _time_ledger(url: str, seconds: float, tag: str = "") -> tuple[int, float, list[int]]:
    """Run reserve+settle for ``seconds``; return (ops, elapsed, latencies ns)."""
    led = open_ledger(url)
    lat: list[int] = []
    i = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        s = time.perf_counter_ns()
        rid = f"{tag}{i}"
        led.reserve(rid, BUCKETS, 0.002, ttl_s=600)
        led.settle(rid, 0.0013)
        lat.append(time.perf_counter_ns() - s)
        i += 1
        if (i & 63) == 0 and time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    led.close()
    return i, elapsed, lat


def _proc(url: str, seconds: float, tag: str, start_at: float) -> tuple[int, float]:
    time.sleep(max(0.0, start_at - time.time()))
    n, elapsed, _ = _time_ledger(url, seconds, tag)
    return n, elapsed


def _multi(url: str, procs: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        start_at = time.time() + 1.5  # let every child finish importing first
        res = pool.starmap(_proc, [(url, seconds, f"p{p}-", start_at) for p in range(procs)])
    return sum(n for n, _ in res) / max(e for _, e in res)


def _time_pair(get, incr, seconds: float, amount: float | int = 0.0013) -> tuple[int, float, list[int]]:
    lat: list[int] = []
    i = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        s = time.perf_counter_ns()
        get("bench:spend:global")
        incr("bench:spend:global", amount)
        lat.append(time.perf_counter_ns() - s)
        i += 1
        if (i & 63) == 0 and time.perf_counter() >= end:
            break
    return i, time.perf_counter() - t0, lat


def _litellm_baselines(redis_host: str, redis_port: int, seconds: float) -> dict:
    from litellm.caching.dual_cache import DualCache
    from litellm.caching.in_memory_cache import InMemoryCache
    from litellm.caching.redis_cache import RedisCache

    out = {}
    dc = DualCache(in_memory_cache=InMemoryCache())
    out["litellm DualCache(mem) get+incr"] = _time_pair(
        lambda k: dc.get_cache(k), lambda k, v: dc.increment_cache(k, v), seconds)
    try:
        rc = RedisCache(host=redis_host, port=redis_port)
        key = f"payg-bench:{uuid.uuid4().hex}"
        out["litellm RedisCache get+incr"] = _time_pair(
            lambda k: rc.get_cache(key), lambda k, v: rc.increment_cache(key, v), seconds,
            amount=1300)  # RedisCache.increment_cache is INCRBY: integer units
        rc.redis_client.delete(key)
    except Exception as e:  # Redis absent: report, keep the rest of the run
        print(f"  (litellm RedisCache baseline skipped: {e})")
    return out


def _row(name: str, n: int, elapsed: float, lat: list[int], base_ops: float | None, base_lit: float | None) -> str:
    ops = n / elapsed
    lat_sorted = sorted(lat)
    med = statistics.median(lat_sorted) / 1000
    p99 = lat_sorted[int(len(lat_sorted) * 0.99) - 1] / 1000
    r1 = f"{base_ops / ops:7.1f}x" if base_ops else "      -"
    r2 = f"{base_lit / ops:7.1f}x" if base_lit else "      -"
    return f"{name:34s} {ops:10.0f} {med:10.1f} {p99:10.1f}   {r1}   {r2}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.5, help="duration of each measurement")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args()
    from urllib.parse import urlsplit

    rparts = urlsplit(args.redis)
    tmp = tempfile.mkdtemp(prefix="payg-bench-")
    prefix = f"payg-bench:{uuid.uuid4().hex}:"
    sep = "&" if "?" in args.redis else "?"
    redis_url = f"{args.redis}{sep}prefix={prefix}"
    runs = {
        "memory": "memory://",
        "sqlite (WAL, synchronous=normal)": f"sqlite:///{tmp}/bench.db",
        "sqlite (WAL, synchronous=full)": f"sqlite:///{tmp}/bench_full.db?synchronous=full",
        "redis (Lua, 1 round trip/phase)": redis_url,
    }
    results = {name: _time_ledger(url, args.seconds) for name, url in runs.items()}
    lit = _litellm_baselines(rparts.hostname or "127.0.0.1", rparts.port or 6379, args.seconds)

    mem_ops = results["memory"][0] / results["memory"][1]
    lit_mem = lit.get("litellm DualCache(mem) get+incr")
    lit_redis = lit.get("litellm RedisCache get+incr")
    print(f"\nreserve+settle, 2 buckets, {args.seconds:.1f}s per row, 1 process unless noted")
    print(f"{'backend':34s} {'ops/s':>10s} {'med µs':>10s} {'p99 µs':>10s}   {'vs mem':>8s}   {'vs litellm':>8s}")
    print("(ratios = how many times slower than the baseline; litellm baseline = same storage kind)")
    for name, (n, el, lat) in results.items():
        base_lit = lit_redis if name.startswith("redis") else lit_mem
        base_lit_ops = base_lit[0] / base_lit[1] if base_lit else None
        print(_row(name, n, el, lat, mem_ops, base_lit_ops))
    for name, (n, el, lat) in lit.items():
        print(_row(name, n, el, lat, mem_ops, None))

    for name, url in (("redis", redis_url), ("sqlite (normal)", f"sqlite:///{tmp}/bench_mp.db")):
        ops = _multi(url, args.procs, args.seconds)
        single = results[next(k for k in results if k.startswith(name.split()[0]))]
        print(f"{args.procs} processes, {name:22s} {ops:10.0f} ops/s total "
              f"({ops / (single[0] / single[1]):.2f}x one process)")

    try:
        import redis

        r = redis.Redis.from_url(args.redis)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
    except Exception:
        pass


if __name__ == "__main__":
    main()
