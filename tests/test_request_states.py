"""The plugin's per-request state map (``core/request_state.py``) stays bounded, and a finished
request's state is kept only briefly, for the hooks that run after the answer.

Why it matters: every state holds its decision (a dict per dropped deployment). Kept for the last
20,000 requests, those objects sat in the heap of a busy proxy and made every full garbage
collection of the process slower; now only the last ``finished_limit`` finished ones are kept.
"""

from __future__ import annotations

from litellm_payg.core.request_state import REQUEST_KEY, RequestStates


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
