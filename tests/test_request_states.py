"""The plugin's per-request state map (``runtime/request_state.py``) stays bounded, and a finished
request's state is kept only briefly, for the hooks that run after the answer.

Why it matters: every state holds its decision (a dict per dropped deployment). Kept for the last
20,000 requests, those objects sat in the heap of a busy proxy and made every full garbage
collection of the process slower; now only the last ``finished_limit`` finished ones are kept.
"""

from __future__ import annotations

from litellm_payg.runtime.request_state import REQUEST_KEY, RequestStates


def test_finished_states_are_kept_only_among_the_last_finished_limit():
    states = RequestStates(limit=100, finished_limit=3)
    metadata = [{} for _ in range(10)]
    minted = [states.mint(m, trace_id=f"t{i}") for i, m in enumerate(metadata)]
    for state in minted[:6]:
        states.finished(state)
    # the three finished last are still found (a late hook: the proxy's response headers)...
    assert [states.find(m) is not None for m in metadata[3:6]] == [True, True, True]
    # ...the three finished before them are gone...
    assert [states.find(m) for m in metadata[:3]] == [None, None, None]
    # ...and every request still open is kept, whatever the finished ones did
    assert all(states.find(m) is state for m, state in zip(metadata[6:], minted[6:]))
    assert len(states) == 7


def test_open_states_are_bounded_by_limit():
    states = RequestStates(limit=5, finished_limit=5)
    metadata = [{} for _ in range(8)]
    for i, m in enumerate(metadata):
        states.mint(m, trace_id=f"t{i}")
    assert len(states) == 5
    assert [states.find(m) is not None for m in metadata] == [False] * 3 + [True] * 5
    assert all(isinstance(m[REQUEST_KEY], str) for m in metadata)  # each got its id all the same


def test_finishing_twice_or_forgetting_keeps_the_counts_right():
    states = RequestStates(limit=10, finished_limit=2)
    metadata = [{} for _ in range(4)]
    minted = [states.mint(m, trace_id=None) for m in metadata]
    states.finished(minted[0])
    states.finished(minted[0])
    states.forget(minted[1])
    states.finished(minted[2])
    states.finished(minted[3])  # the oldest finished (0) goes
    assert [states.find(m) is not None for m in metadata] == [False, False, True, True]
    assert all(state.finished for state in (minted[0], minted[2], minted[3]))


# -- issue #19 item 5: a refused request's state goes at once; a request without state is never
# admitted unreserved ----------------------------------------------------------------------------------

import pytest  # noqa: E402

from routing_helpers import attached, chat_deployments  # noqa: E402

POLICY = {"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
          "models": {"deepseek/deepseek-chat": {"quality": 1}, "mistral/mistral-large-latest": {"quality": 1}}}


def _adapter(engine):
    return engine.adapter


@pytest.mark.asyncio
async def test_a_refused_request_keeps_no_state():
    policy = {**POLICY, "budgets": [{"scope": "global", "window": "day", "limit_usd": 1e-12}]}
    with attached(chat_deployments(), policy, num_retries=0) as (router, engine):
        metadata = {"blob": "x" * 10_000}
        with pytest.raises(Exception, match="exceeded"):
            await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}], metadata=metadata)
        assert len(_adapter(engine).states) == 0
        assert engine.spend.ledger.open_reservations() == 0


@pytest.mark.asyncio
async def test_a_request_whose_state_is_gone_is_refused_not_admitted_unreserved():
    """The state map may drop a state (its bound, an end-of-request release): a pick or an attempt
    for such a request must not go through without a reservation."""
    with attached(chat_deployments(), POLICY, num_retries=0) as (router, engine):
        _adapter(engine).states.limit = 0  # every state is dropped as soon as it is minted
        with pytest.raises(Exception) as info:
            await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert getattr(info.value, "status_code", None) == 400, info.value
        assert engine.spend.ledger.records() == [] and engine.spend.ledger.open_reservations() == 0


@pytest.mark.asyncio
async def test_an_answered_request_keeps_no_state_once_it_settled():
    from routing_helpers import settled

    with attached(chat_deployments(), POLICY, num_retries=0) as (router, engine):
        for _ in range(3):
            await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        await settled(engine)
        assert len(_adapter(engine).states) == 0
        assert len(engine.spend.ledger.records()) == 3


def test_request_ids_are_distinct_random_hex_and_a_forked_child_mints_its_own():
    """Ids come from a pool of OS random bytes read 256 ids at a time: every id is 32 hex digits,
    none repeats, and a forked child (a proxy worker) does not mint the ids its parent mints next."""
    import os

    from litellm_payg.runtime import request_state

    ids = [request_state._ids.next() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    ids_ = request_state._ids
    while len(ids_._pool) - ids_._at < 16 * 5:
        ids_.next()  # five ids left in the pool: a child that inherited it would mint these five
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, "".join(request_state._ids.next() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parent = "".join(request_state._ids.next() for _ in range(5))
    assert len(child) == len(parent) == 160 and child != parent
