"""Records without a budget are written in batches (``stores/ledger/batching.py``), by the SQLite and
the Redis ledger.

A policy without budgets books every answer as a record no admission reads; writing each in its own
transaction (SQLite) or two round trips (Redis), on the event loop, was the largest cost the plugin
added to a request. These tests hold the batching to what the module promises: nothing in the
process reads around a waiting record, another process sees it within ``batch_s``, ``close()`` and
interpreter exit write it, a failed write keeps it, a forked child leaves it to its parent, and
``batch_s=0`` (or ``synchronous=full``) writes each at once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from litellm_payg.policy.load import PolicyError, load_policy
from litellm_payg.stores.ledger import Bucket, LedgerError, LedgerUnavailable, open_ledger
from litellm_payg.stores.ledger.batching import BATCH_ROWS

CAP = Bucket("b0|global|day|2026-05-05", 10.0, True)


def _on_disk(path: Path) -> list[tuple[str, float]]:
    """What another process reading the file sees."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT reservation_id, amount_usd FROM records ORDER BY seq").fetchall()
    finally:
        db.close()


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_record_waits_but_the_ledger_itself_never_reads_around_it(tmp_path):
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=30")
    try:
        ledger.record("r1", [], 0.25, ttl_s=60, now=100, attrs={"model": "m"})
        assert _on_disk(path) == []  # waiting
        assert [(r.reservation_id, r.amount_usd) for r in ledger.records()] == [("r1", 0.25)]
        assert _on_disk(path) == [("r1", 0.25)]  # the read wrote it first
        ledger.record("r2", [], 0.5, ttl_s=60, now=101)
        ledger.reserve("held", [CAP], 1.0, ttl_s=60, now=102)  # any other call writes the waiting rows first
        assert _on_disk(path) == [("r1", 0.25), ("r2", 0.5)]
    finally:
        ledger.close()


def test_another_process_sees_a_record_within_batch_s(tmp_path):
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=0.1")
    try:
        started = time.monotonic()
        ledger.record("r1", [], 0.25, ttl_s=60)
        assert _on_disk(path) == []
        assert _wait_for(lambda: _on_disk(path) == [("r1", 0.25)])
        assert time.monotonic() - started < 5
    finally:
        ledger.close()


def test_a_full_batch_is_written_at_once(tmp_path):
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=60")
    try:
        for i in range(BATCH_ROWS):
            ledger.record(f"r{i}", [], 0.01, ttl_s=60)
        assert len(_on_disk(path)) == BATCH_ROWS
    finally:
        ledger.close()


def test_close_writes_what_waits(tmp_path):
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=60")
    ledger.record("r1", [], 0.25, ttl_s=60)
    ledger.close()
    assert _on_disk(path) == [("r1", 0.25)]


def test_interpreter_exit_writes_what_waits(tmp_path):
    path = tmp_path / "l.db"
    script = textwrap.dedent(f"""
        from litellm_payg.stores.ledger import open_ledger
        ledger = open_ledger("sqlite:///{path}?batch_s=60")
        ledger.record("r1", [], 0.25, ttl_s=60)
        # no close(): the process just ends
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120,
                   env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert _on_disk(path) == [("r1", 0.25)]


def test_a_write_that_fails_keeps_the_records_for_the_next(tmp_path, caplog):
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=60")
    try:
        ledger.record("r1", [], 0.25, ttl_s=60)
        os.remove(path)  # the file goes away while a record waits
        with pytest.raises(LedgerUnavailable):
            ledger.flush()
        with pytest.raises(LedgerUnavailable):
            ledger.records()
        path.touch()  # the operator starts afresh with an empty file
        assert [(r.reservation_id, r.amount_usd) for r in ledger.records()] == [("r1", 0.25)]
        assert _on_disk(path) == [("r1", 0.25)]
    finally:
        ledger.close()


def test_a_record_of_an_open_reservation_settles_it_when_written(tmp_path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}?batch_s=60")
    try:
        ledger.reserve("r1", [CAP], 1.0, ttl_s=60, now=100)
        ledger.record("r1", [], 0.25, ttl_s=60, now=101)
        assert ledger.open_reservations() == 0
        (record,) = ledger.records()
        assert (record.reservation_id, record.amount_usd, record.buckets) == ("r1", 0.25, (CAP.key,))
    finally:
        ledger.close()


@pytest.mark.parametrize("url", ["sqlite:///{p}?batch_s=0", "sqlite:///{p}?synchronous=full"])
def test_batch_s_0_and_synchronous_full_write_each_record_at_once(tmp_path, url):
    path = tmp_path / "l.db"
    ledger = open_ledger(url.format(p=path))
    try:
        ledger.record("r1", [], 0.25, ttl_s=60)
        assert _on_disk(path) == [("r1", 0.25)]
    finally:
        ledger.close()


@pytest.mark.parametrize("value", ["soon", "-1", "61", "nan"])
def test_a_bad_batch_s_is_an_error_naming_it(tmp_path, value):
    with pytest.raises(LedgerError, match="batch_s must be a number of seconds from 0 to 60"):
        open_ledger(f"sqlite:///{tmp_path / 'l.db'}?batch_s={value}")
    with pytest.raises(PolicyError, match="batch_s must be a number of seconds") as caught:
        load_policy({"version": 1, "ledger": f"sqlite:///{tmp_path / 'l.db'}?batch_s={value}"})
    assert "ledger" in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_write_its_parents_waiting_records_again(tmp_path):
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=60")
    try:
        ledger.record("parent", [], 0.25, ttl_s=60)
        pid = os.fork()
        if pid == 0:  # the child: records its own and exits through the normal exit path
            try:
                child = open_ledger(f"sqlite:///{path}?batch_s=60")
                child.record("child", [], 0.5, ttl_s=60)
                child.close()
                ledger.close()  # the inherited ledger: nothing of the parent's to write
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        ledger.flush()
        assert sorted(_on_disk(path)) == [("child", 0.5), ("parent", 0.25)]
    finally:
        ledger.close()


# -- the Redis ledger batches the same way (a real Redis; skipped without one unless CI is set) ----


@pytest.fixture
def redis_base():
    """A Redis URL with a prefix unique to this test (no other query yet), its keys deleted afterwards."""
    from services import fresh_redis_prefix

    with fresh_redis_prefix() as url:
        yield url


def _seen_by_another_replica(url: str) -> list[tuple[str, float]]:
    other = open_ledger(url + "&batch_s=0")
    try:
        return [(r.reservation_id, r.amount_usd) for r in other.records()]
    finally:
        other.close()


def test_redis_a_record_waits_then_another_replica_sees_it_within_batch_s(redis_base):
    ledger = open_ledger(redis_base + "&batch_s=0.1")
    try:
        ledger.record("r1", [], 0.25, ttl_s=60, attrs={"model": "m"})
        assert _seen_by_another_replica(redis_base) == []  # waiting
        assert _wait_for(lambda: _seen_by_another_replica(redis_base) == [("r1", 0.25)])
        assert [(r.reservation_id, r.amount_usd, r.attrs["model"]) for r in ledger.records()] == [("r1", 0.25, "m")]
    finally:
        ledger.close()


def test_redis_the_ledger_itself_never_reads_around_a_waiting_record(redis_base):
    ledger = open_ledger(redis_base + "&batch_s=60")
    try:
        ledger.record("r1", [], 0.25, ttl_s=60, now=100)
        ledger.reserve("r2", [CAP], 1.0, ttl_s=60, now=101)  # writes the waiting record first
        assert _seen_by_another_replica(redis_base) == [("r1", 0.25)]
        ledger.record("r2", [], 0.5, ttl_s=60, now=102)  # an open reservation: settled when written
        assert ledger.open_reservations() == 0
        assert sorted((r.reservation_id, r.amount_usd) for r in ledger.records()) == [("r1", 0.25), ("r2", 0.5)]
    finally:
        ledger.close()


def test_redis_a_full_batch_is_written_at_once_and_close_writes_the_rest(redis_base):
    ledger = open_ledger(redis_base + "&batch_s=60")
    for i in range(BATCH_ROWS + 3):
        ledger.record(f"r{i}", [], 0.01, ttl_s=60)
    assert len(_seen_by_another_replica(redis_base)) == BATCH_ROWS
    ledger.close()
    assert len(_seen_by_another_replica(redis_base)) == BATCH_ROWS + 3


def test_redis_batch_s_0_writes_each_record_at_once(redis_base):
    ledger = open_ledger(redis_base + "&batch_s=0")
    try:
        ledger.record("r1", [], 0.25, ttl_s=60)
        assert _seen_by_another_replica(redis_base) == [("r1", 0.25)]
    finally:
        ledger.close()


def test_redis_a_bad_batch_s_is_an_error_naming_it():
    with pytest.raises(LedgerError, match="batch_s must be a number of seconds from 0 to 60"):
        open_ledger("redis://127.0.0.1:6379/0?batch_s=soon")
    with pytest.raises(PolicyError, match="batch_s must be a number of seconds"):
        load_policy({"version": 1, "ledger": "redis://127.0.0.1:6379/0?batch_s=-1"})


# -- a batch the timer thread is writing when the process ends or the ledger closes --------------------

_SLOW_WRITE = """
import sys, threading, time
from litellm_payg.stores.ledger import open_ledger
ledger = open_ledger(sys.argv[1] + {sep!r} + "batch_s=0.05")
writer = "_write_rows" if hasattr(ledger, "_write_rows") else "_write_batch"
write, started = getattr(ledger, writer), threading.Event()
def slow(rows):  # a loaded machine: the timer thread took the batch and is still writing it
    started.set()
    time.sleep(0.5)
    write(rows)
setattr(ledger, writer, slow)
ledger.record("r1", [], 0.25, ttl_s=60)
assert started.wait(10)
{end}
"""


@pytest.mark.parametrize("end", ["", "ledger.close()"], ids=["exit", "close"])
def test_a_batch_being_written_by_the_timer_at_exit_or_close_is_not_lost_sqlite(tmp_path, end):
    path = tmp_path / "l.db"
    subprocess.run([sys.executable, "-c", _SLOW_WRITE.format(sep="?", end=end), f"sqlite:///{path}"],
                   check=True, timeout=120, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert _on_disk(path) == [("r1", 0.25)]


@pytest.mark.parametrize("end", ["", "ledger.close()"], ids=["exit", "close"])
def test_a_batch_being_written_by_the_timer_at_exit_or_close_is_not_lost_redis(redis_base, end):
    """The Redis ledger's exit hook and close() used to see nothing waiting (the timer thread had taken
    the batch), return, and let the interpreter end or the pool close under the write: 0 records for 4
    billed streams in tests/test_settle_streams.py on a loaded machine."""
    subprocess.run([sys.executable, "-c", _SLOW_WRITE.format(sep="&", end=end), redis_base],
                   check=True, timeout=120, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert _seen_by_another_replica(redis_base) == [("r1", 0.25)]


def test_one_writer_thread_per_ledger_writes_every_batch_and_ends_with_it(tmp_path):
    """Each batch used to start a ``threading.Timer`` (a thread start on the request that armed it);
    now one writer thread per ledger is woken per batch, and ends when the ledger is closed, or
    freed unclosed. (Other tests' ledgers may still have writers: only the new ones are counted.)"""
    import gc
    import threading

    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "litellm-payg-records" and t.is_alive()}

    before = writers()
    path = tmp_path / "l.db"
    ledger = open_ledger(f"sqlite:///{path}?batch_s=0.05")
    try:
        for i in range(3):  # three batches, each written by the writer within batch_s
            ledger.record(f"r{i}", [], 0.25, ttl_s=60, now=100 + i)
            assert _wait_for(lambda: len(_on_disk(path)) == i + 1), f"batch {i} was not written"
        (writer,) = writers() - before
    finally:
        ledger.close()
    writer.join(10)
    assert not writer.is_alive(), "close() did not end the writer"
    unclosed = open_ledger(f"sqlite:///{tmp_path / 'u.db'}?batch_s=0.05")
    unclosed.record("u1", [], 0.25, ttl_s=60, now=100)
    assert _wait_for(lambda: len(_on_disk(tmp_path / "u.db")) == 1)
    (writer,) = writers() - before
    del unclosed
    gc.collect()
    writer.join(10)
    assert not writer.is_alive(), "a freed ledger's writer did not end"
