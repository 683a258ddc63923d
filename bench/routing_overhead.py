"""Routing overhead of litellm-payg: what the plugin adds to a LiteLLM Router request, and what the
decision alone costs.

Run (offline; about 70 s on 2 cores, ``--quick`` about 20 s)::

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/routing_overhead.py
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/routing_overhead.py --quick
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/routing_overhead.py --sizes 20 --requests 1000

Part 1, ``Router.acompletion`` with ``mock_response`` (no network), N deployments in one group
``chat`` (a mix of priced models from LiteLLM's bundled price map), six modes measured in the same
process, interleaved in batches (the order rotates every round) after a warm-up:

* ``qf``      - a Router governed by a ``quality_floor`` policy (every deployment has a quality score,
                so the rule prices and sorts all N candidates on every pick);
* ``ct``      - a Router governed by ``policies/cost-threshold.yaml`` (``cost_threshold``: all N
                candidates are matched, priced or dropped with a reason);
* ``base+cb`` - an identical ungoverned Router (different ``model_info.id``s) while a payg callback
                is registered: LiteLLM runs it, it sees foreign deployments and passes through;
* ``base+noop`` - the same ungoverned Router with a ``CustomLogger`` that overrides nothing: what
                LiteLLM's callback/logging machinery costs for *any* callback;
* ``base``    - the same ungoverned Router with no callback at all anywhere in LiteLLM's lists
                (``litellm.callbacks`` *and* the success/failure lists LiteLLM copies it into);
                simple-shuffle spreads its requests over all 15 models.
* ``base@pick`` - ``base`` with LiteLLM's own per-request ``_router_weights`` putting every request
                on the group's first deployment (deepseek-chat), where ``qf`` and ``ct`` send theirs:
                LiteLLM's own per-provider work differs by model (a few percent), so this is the
                Router serving the *same* model without the plugin. The targets are read against
                ``base`` (the issue's "Router median"); the ratio against ``base@pick`` is printed
                beside each verdict.

Latency is ``time.perf_counter()`` around ``await router.acompletion(...)`` as the caller sees it.
LiteLLM runs success logging (which includes the plugin's ``async_log_success_event``) in background
tasks after the call returns; ``cpu/req`` is each batch's wall time *including draining those
tasks*, divided by the batch size: what a request costs the event loop in total.

Part 2, the decision alone (no LiteLLM): ``Engine.decide(request, candidates)`` per call, interleaved
with a trivial baseline (``sorted(candidates, key=price)``) so the ratio means something on a noisy
machine; plus the adapter's other per-pick work (the whole ``async_filter_deployments`` without
LiteLLM, ``litellm.token_counter`` and ``Decision.as_dict``).

Targets (from the issue): the plugin adds at most 10% to the median at 20 deployments and at most
25% at 200; the decision alone is under 50 us median at 20 deployments. The latency verdicts read the
*paired* ratio: each round runs every mode back to back, each mode's batch median is divided by
base's of the same round, and the median of those ratios is compared with the target (its 95%
bootstrap interval is printed beside it). The pooled medians' ratio is printed too; on a machine
whose speed drifts during the run it moves with the drift. Misses are reported, never a non-zero exit: benchmarks
inform, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm import Router  # noqa: E402
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

from litellm_payg.adapter import litellm_versions  # noqa: E402
from litellm_payg.adapter.routing import PaygRouting, attach  # noqa: E402
from litellm_payg.core.decision import RouteRequest  # noqa: E402
from litellm_payg.stores.prices import count_prompt_tokens  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COST_THRESHOLD_POLICY = REPO / "policies" / "cost-threshold.yaml"

#: priced in LiteLLM's bundled price map (checked at start-up), with a made-up quality score.
#: The first two are the ones policies/cost-threshold.yaml names, so every size has them.
MODELS: tuple[tuple[str, float], ...] = (
    ("deepseek/deepseek-chat", 0.80),
    ("mistral/mistral-large-latest", 0.90),
    ("gpt-4o-mini", 0.75),
    ("gpt-4o", 0.92),
    ("mistral/mistral-small-latest", 0.70),
    ("gpt-4.1-mini", 0.85),
    ("gpt-4.1-nano", 0.65),
    ("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", 0.82),
    ("mistral/codestral-latest", 0.78),
    ("gemini/gemini-2.5-flash", 0.86),
    ("gemini/gemini-2.5-pro", 0.95),
    ("openai/o3-mini", 0.88),
    ("deepseek/deepseek-reasoner", 0.90),
    ("mistral/open-mistral-nemo", 0.60),
    ("gpt-3.5-turbo", 0.55),
)
MIN_QUALITY = 0.8  # keeps about half the deployments, so the rule both drops and sorts

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant for a travel booking site. Answer in two sentences."},
    {
        "role": "user",
        "content": "I am flying from Lisbon to Tokyo next March with a stop in Frankfurt. How much time should I "
        "leave for the connection, and do I need to collect my bag and check it in again in Frankfurt if "
        "the two flights are on separate tickets? I am travelling with one checked bag and a small backpack.",
    },
]

#: deployments -> most the plugin may add to the Router's median latency (the issue's targets)
TARGET_OVERHEADS = {20: 0.10, 200: 0.25}
TARGET_DECIDE_US = 50.0  # decision alone under 50 us median at 20 deployments
TARGET_SIZE = 20


# -- set-up ------------------------------------------------------------------------------------


def model_list(n: int, prefix: str) -> list[dict[str, Any]]:
    """N deployments of group ``chat``, cycling through MODELS, with ids unique to ``prefix``."""
    return [
        {
            "model_name": "chat",
            "litellm_params": {"model": MODELS[i % len(MODELS)][0], "mock_response": "Leave 90 minutes.", "api_key": "sk-bench"},
            "model_info": {"id": f"{prefix}-{i:03d}"},
        }
        for i in range(n)
    ]


def quality_floor_policy() -> dict[str, Any]:
    return {
        "version": 1,
        "models": {model: {"quality": q} for model, q in MODELS},
        "routes": {"chat": [{"quality_floor": {"min_quality": MIN_QUALITY}}]},
    }


def make_router(n: int, prefix: str) -> Router:
    return Router(model_list=model_list(n, prefix), num_retries=0)


class NoopLogger(CustomLogger):
    """A callback that overrides nothing: what merely having a callback costs in LiteLLM."""


def all_adapters() -> list[CustomLogger]:
    return [
        cb for cb in litellm.logging_callback_manager.get_all_callbacks() if isinstance(cb, (PaygRouting, NoopLogger))
    ]


def set_payg_callbacks(active: Sequence[CustomLogger]) -> None:
    """Exactly ``active`` payg callbacks registered with LiteLLM, in no list otherwise.

    ``engine.detach()`` only takes the callback out of ``litellm.callbacks``; LiteLLM has by then
    copied it into its success/failure lists (on the first request), where it keeps running. So the
    ``base`` mode removes it from every list, and the other modes put it back as ``attach`` does.
    """
    for adapter in all_adapters():
        litellm.logging_callback_manager.remove_callback_from_all_lists(adapter)
    for adapter in active:
        litellm.callbacks.append(adapter)


# -- statistics --------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- part 1: Router.acompletion ----------------------------------------------------------------


async def _drain(idle_tasks: int) -> None:
    """Let LiteLLM's background logging of the batch finish (bounded: never hangs)."""
    for _ in range(2000):
        if len(asyncio.all_tasks()) <= idle_tasks:
            return
        await asyncio.sleep(0)
    await asyncio.sleep(0.005)


async def bench_router(n: int, requests: int, batch: int, warmup: int) -> dict[str, dict[str, Any]]:
    base = make_router(n, f"base{n}")
    governed = {"qf": make_router(n, f"qf{n}"), "ct": make_router(n, f"ct{n}")}
    engines = {
        "qf": attach(governed["qf"], quality_floor_policy()),
        "ct": attach(governed["ct"], COST_THRESHOLD_POLICY),
    }
    adapters = {name: engine.adapter for name, engine in engines.items()}
    modes: dict[str, tuple[Router, list[CustomLogger]]] = {
        "qf": (governed["qf"], [adapters["qf"]]),
        "ct": (governed["ct"], [adapters["ct"]]),
        "base+cb": (base, [adapters["qf"]]),  # a payg callback is registered, for another router
        "base+noop": (base, [NoopLogger()]),  # any callback at all: LiteLLM's own logging cost
        "base": (base, []),
        "base@pick": (base, []),  # no callback, LiteLLM's own weights send it where qf and ct do
    }
    #: base@pick: simple-shuffle weights that put every request on the group's first deployment
    #: (deepseek-chat, the one both governed modes pick), so the governed modes can also be
    #: compared with the Router serving the same model natively
    pinned = {"_router_weights": {"chat": {f"base{n}-{i:03d}": (1 if i == 0 else 0) for i in range(n)}}}
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    #: each round's batch median per mode: rounds pair the modes in time (paired_ratio)
    round_medians: dict[str, list[float]] = {m: [] for m in modes}
    per_request_total: dict[str, list[float]] = {m: [] for m in modes}
    chosen: dict[str, set[str]] = {m: set() for m in modes}

    async def one(router: Router, **extra: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        resp = await router.acompletion(model="chat", messages=MESSAGES, **extra)
        return time.perf_counter() - t0, resp

    try:
        # warm-up: every mode, so imports, caches and LiteLLM's lazy set-up are paid before timing
        for mode, (router, active) in modes.items():
            set_payg_callbacks(active)
            for _ in range(warmup):
                await one(router, **(pinned if mode == "base@pick" else {}))
        await asyncio.sleep(0.05)
        idle_tasks = len(asyncio.all_tasks())
        await _drain(idle_tasks)

        order = list(modes)
        rounds = max(1, requests // batch)
        gc.collect()
        for r in range(rounds):
            rotated = order[r % len(order):] + order[: r % len(order)]
            for mode in rotated:
                router, active = modes[mode]
                set_payg_callbacks(active)
                await _drain(idle_tasks)
                t_batch = time.perf_counter()
                batch_latencies = []
                for _ in range(batch):
                    dt, resp = await one(router, **(pinned if mode == "base@pick" else {}))
                    batch_latencies.append(dt)
                    chosen[mode].add(str((resp._hidden_params or {}).get("model_id")))
                latencies[mode].extend(batch_latencies)
                round_medians[mode].append(med(batch_latencies))
                await _drain(idle_tasks)
                per_request_total[mode].append((time.perf_counter() - t_batch) / batch)
    finally:
        set_payg_callbacks([])
        for engine in engines.values():
            engine.detach()

    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        out[mode] = {
            "median_ms": med(latencies[mode]) * 1e3,
            "p99_ms": pct(latencies[mode], 0.99) * 1e3,
            "cpu_ms": med(per_request_total[mode]) * 1e3,
            "n": len(latencies[mode]),
            "distinct_deployments": len(chosen[mode]),
            "round_medians": round_medians[mode],
        }
    return out


def paired_ratio(mode: Sequence[float], base: Sequence[float], resamples: int = 2000) -> tuple[float, float, float]:
    """The median over rounds of (mode's batch median / base's batch median in the same round),
    with a 95% bootstrap interval.

    Why paired: the machine's speed drifts over a run (neighbours, frequency), by more than the
    effect measured at 20 deployments; a round runs every mode within a few hundred milliseconds,
    so a ratio within a round cancels the drift that the pooled medians keep."""
    ratios = [m / b for m, b in zip(mode, base) if b > 0]
    if not ratios:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(0)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return statistics.median(ratios), boot[int(0.025 * resamples)], boot[int(0.975 * resamples) - 1]


# -- part 2: the decision alone ----------------------------------------------------------------


def interleaved(fns: dict[str, Callable[[], Any]], iterations: int) -> dict[str, list[float]]:
    """Time each function once per iteration, round-robin, in ns per call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i in range(iterations):
            for name, fn in items if i % 2 == 0 else reversed(items):
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
    finally:
        gc.enable()
    return times


def bench_decision(n: int, iterations: int) -> dict[str, dict[str, float]]:
    qf_router = make_router(n, f"dqf{n}")
    ct_router = make_router(n, f"dct{n}")
    qf = attach(qf_router, quality_floor_policy())
    ct = attach(ct_router, COST_THRESHOLD_POLICY)
    set_payg_callbacks([])  # nothing here goes through LiteLLM; keep its lists clean
    try:
        qf_adapter: PaygRouting = qf.adapter  # type: ignore[assignment]
        qf_cands = list(qf_adapter._candidates.values())
        ct_cands = list(ct.adapter._candidates.values())  # type: ignore[union-attr]
        prompt_tokens = count_prompt_tokens(qf_cands[0].model, MESSAGES)
        request = RouteRequest(group="chat", prompt_tokens=prompt_tokens, output_tokens=256)
        qf_decision = qf.decide(request, qf_cands)
        healthy = [d for d in litellm_versions.deployments(qf_router) if d["model_name"] == "chat"]
        assert len(healthy) == n

        def adapter_filter() -> None:
            # the whole per-pick work of the plugin minus LiteLLM: candidates lookup, token count,
            # identity, decide, as_dict, stamping. Fresh metadata each time = a first attempt.
            coro = qf_adapter.async_filter_deployments(
                "chat", healthy, MESSAGES, {"messages": MESSAGES, "metadata": {}}
            )
            try:
                coro.send(None)
            except StopIteration:
                pass
            else:  # never awaits in practice
                raise RuntimeError("async_filter_deployments awaited")

        fns: dict[str, Callable[[], Any]] = {
            "baseline sorted()": lambda: sorted(qf_cands, key=lambda c: c.input_usd_per_token),
            "decide qf": lambda: qf.decide(request, qf_cands),
            "decide ct": lambda: ct.decide(request, ct_cands),
            "as_dict qf": qf_decision.as_dict,
            "token_counter": lambda: count_prompt_tokens(qf_cands[0].model, MESSAGES),
            "adapter filter qf": adapter_filter,
        }
        for fn in fns.values():  # warm-up
            for _ in range(50):
                fn()
        times = interleaved(fns, iterations)
    finally:
        qf.detach()
        ct.detach()
        set_payg_callbacks([])
    base_med = med(times["baseline sorted()"])
    return {
        name: {
            "median_us": med(ts) / 1e3,
            "p99_us": pct(ts, 0.99) / 1e3,
            "x_baseline": med(ts) / base_med if base_med else float("nan"),
        }
        for name, ts in times.items()
    }


# -- output ------------------------------------------------------------------------------------


def check_models() -> None:
    missing = []
    for model, _ in MODELS:
        try:
            info = litellm.get_model_info(model)
            if not info.get("input_cost_per_token") or not info.get("output_cost_per_token"):
                missing.append(model)
        except Exception:
            missing.append(model)
    if missing:
        sys.exit(f"not priced in this LiteLLM's bundled price map: {', '.join(missing)}; edit MODELS")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="timed requests per mode and size (default 600, quick 40)")
    ap.add_argument("--sizes", default="2,20,200", help="comma-separated deployment counts (default 2,20,200)")
    ap.add_argument("--batch", type=int, default=20, help="requests per interleaved batch (default 20)")
    ap.add_argument("--iterations", type=int, default=None, help="decision-alone iterations (default 4000, quick 500)")
    ap.add_argument("--quick", action="store_true", help="fewer requests and iterations (about 15 s)")
    ap.add_argument("--skip-router", action="store_true", help="only the decision alone")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    requests = args.requests or (40 if args.quick else 600)
    iterations = args.iterations or (500 if args.quick else 4000)
    warmup = 5 if args.quick else 30

    check_models()
    print(
        f"litellm-payg routing overhead  |  litellm {getattr(litellm, '__version__', None) or _litellm_version()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}  |  "
        f"{requests} requests/mode/size in batches of {args.batch}, {iterations} decision iterations"
    )
    print(f"models cycled: {len(MODELS)}; quality_floor min_quality {MIN_QUALITY}; cost_threshold = {COST_THRESHOLD_POLICY.relative_to(REPO)}")
    t_start = time.perf_counter()

    verdicts: list[str] = []
    if not args.skip_router:
        print("\n== Router.acompletion (mock_response), ms per request; x base = mode median / base median; "
              "paired = median over rounds of the same round's ratio [95% interval] ==")
        head = (f"{'N':>4} {'mode':<9} {'median':>8} {'p99':>8} {'cpu/req':>8} {'x base':>7} {'x base+cb':>9} {'x p99':>7}"
                f"  {'paired x base':<22} picks")
        print(head)
        print("-" * len(head))
        # one event loop for every size: LiteLLM's logging worker is bound to the first loop it sees
        loop = asyncio.new_event_loop()
        for n in sizes:
            res = loop.run_until_complete(bench_router(n, requests, args.batch, warmup))
            b, bcb = res["base"], res["base+cb"]
            paired = {mode: paired_ratio(res[mode]["round_medians"], b["round_medians"]) for mode in res}
            for mode in ("base", "base@pick", "base+noop", "base+cb", "qf", "ct"):
                r = res[mode]
                pm, lo, hi = paired[mode]
                print(
                    f"{n:>4} {mode:<9} {r['median_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['cpu_ms']:>8.3f} "
                    f"{r['median_ms'] / b['median_ms']:>7.3f} {r['median_ms'] / bcb['median_ms']:>9.3f} "
                    f"{r['p99_ms'] / b['p99_ms']:>7.3f}  {f'{pm:.3f} [{lo:.3f}, {hi:.3f}]':<22} {r['distinct_deployments']}"
                )
            if n in TARGET_OVERHEADS:
                target = TARGET_OVERHEADS[n]
                for mode in ("qf", "ct"):
                    pm, lo, hi = paired[mode]
                    over = pm - 1
                    at_pick = paired_ratio(res[mode]["round_medians"], res["base@pick"]["round_medians"])[0] - 1
                    verdicts.append(
                        f"[{'PASS' if over <= target else 'MISS'}] plugin ({mode}) adds {over:+.1%} to the median at {n} "
                        f"deployments vs no callback, paired by round (95% interval {lo - 1:+.1%} to {hi - 1:+.1%}; "
                        f"target <= {target:.0%}); pooled medians {res[mode]['median_ms'] / b['median_ms'] - 1:+.1%}, "
                        f"{res[mode]['median_ms'] / bcb['median_ms'] - 1:+.1%} vs base+cb; "
                        f"{at_pick:+.1%} vs base@pick (paired)"
                    )
            print("-" * len(head))
        loop.close()

    print("\n== The decision alone (no LiteLLM), us per call; x base = median / sorted() median, same run ==")
    head = f"{'N':>4} {'what':<18} {'median':>9} {'p99':>9} {'x base':>8}"
    print(head)
    print("-" * len(head))
    for n in sizes:
        res2 = bench_decision(n, iterations)
        for name, r in res2.items():
            print(f"{n:>4} {name:<18} {r['median_us']:>9.2f} {r['p99_us']:>9.2f} {r['x_baseline']:>8.1f}")
        print("-" * len(head))
        if n == TARGET_SIZE:
            for name in ("decide qf", "decide ct"):
                m = res2[name]["median_us"]
                verdicts.append(
                    f"[{'PASS' if m < TARGET_DECIDE_US else 'MISS'}] {name}: {m:.1f} us median at {n} candidates "
                    f"(target < {TARGET_DECIDE_US:g} us)"
                )

    print("\n== Targets ==" + (" (--quick: too few requests for a verdict, indicative only)" if args.quick else ""))
    if not verdicts:
        print(f"(size {TARGET_SIZE} not measured; pass --sizes including {TARGET_SIZE})")
    for v in verdicts:
        print(v)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


def _litellm_version() -> str:
    try:
        from importlib.metadata import version

        return version("litellm")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
