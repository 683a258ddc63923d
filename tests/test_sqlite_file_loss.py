"""The SQLite ledger file removed or replaced while the process runs (a real file, a real Router).

Before: the open connection kept writing to the deleted inode, with no log line, and the spend was
gone at restart. Now the next call detects it, saves the detached content beside the path, logs
at ERROR, fails as an outage (``on_ledger_error`` applies), and resumes on the file put back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from routing_helpers import DEEPSEEK, attached, deployment

from litellm_payg.stores.ledger import Bucket, LedgerUnavailable, open_ledger
from litellm_payg.runtime.spend import LedgerDown

CAP = Bucket("b0|global|day|2026-05-05", 10.0, True)
MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]
MOCK_COST = 10 * 2.8e-07 + 20 * 4.2e-07  # LiteLLM's mock usage at deepseek-chat's bundled price


def _detached(folder: Path) -> Path:
    (copy,) = [p for p in folder.iterdir() if ".detached-" in p.name]
    return copy


def _records(path: Path) -> list[tuple[str, float]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT reservation_id, amount_usd FROM records ORDER BY seq").fetchall()
    finally:
        db.close()


def test_removed_file_is_detected_saved_and_resumed_when_restored(tmp_path, caplog):
    path = tmp_path / "ledger.db"
    led = open_ledger(f"sqlite:///{path}")
    assert led.reserve("a", [CAP], 1.0, 60).ok and led.settle("a", 0.5)
    assert led.reserve("open", [CAP], 1.0, 60).ok  # in flight when the file goes
    wal = os.open(str(path) + "-wal", os.O_RDONLY)  # the old WAL, to prove nothing more is written to it
    size_before = os.fstat(wal).st_size
    os.remove(path)

    with caplog.at_level(logging.ERROR, logger="litellm_payg"):
        with pytest.raises(LedgerUnavailable, match="was removed while in use"):
            led.reserve("b", [CAP], 1.0, 60)
    assert any(r.levelno == logging.ERROR and str(path) in r.getMessage() for r in caplog.records), caplog.text
    with pytest.raises(LedgerUnavailable, match="is missing"):  # and every call while it is missing
        led.settle("open", 0.25)
    assert not path.exists()  # never silently recreated empty
    assert os.fstat(wal).st_size == size_before
    os.close(wal)

    saved = _detached(tmp_path)
    assert _records(saved) == [("a", 0.5)]
    shutil.move(saved, path)  # the operator restores the saved copy
    assert led.settle("open", 0.25)  # the reservation made before the loss still charges
    assert led.reserve("b", [CAP], 1.0, 60).ok
    assert [r.reservation_id for r in led.records()] == ["a", "open"]
    assert led.usage([CAP])[CAP.key].spent_usd == pytest.approx(0.75)
    led.close()
    assert _records(path) == [("a", 0.5), ("open", 0.25)]


def test_replaced_file_is_reopened_and_the_open_reservations_carried_into_it(tmp_path, caplog):
    path = tmp_path / "ledger.db"
    led = open_ledger(f"sqlite:///{path}")
    assert led.reserve("a", [CAP], 1.0, 60).ok and led.settle("a", 0.5)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(backup) as copy:  # a consistent backup, as sqlite3 .backup makes it
        sqlite3.connect(path).backup(copy)
    assert led.reserve("b", [CAP], 1.0, 60).ok and led.settle("b", 0.25)  # after the backup
    assert led.reserve("open", [CAP], 1.0, 60).ok
    os.replace(backup, path)  # the operator restores the backup over the live file

    with caplog.at_level(logging.ERROR, logger="litellm_payg"):
        with pytest.raises(LedgerUnavailable, match="was replaced by another file"):
            led.reserve("c", [CAP], 1.0, 60)
    assert any(str(path) in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    # what the backup lacks is in the saved copy, not lost
    assert _records(_detached(tmp_path)) == [("a", 0.5), ("b", 0.25)]
    # the next call uses the restored file; the open reservation was carried into it
    assert led.settle("open", 0.125)
    assert [r.reservation_id for r in led.records()] == ["a", "open"]
    assert led.open_reservations() == 0 and led.usage([CAP])[CAP.key].reserved_usd == 0
    led.close()


def _policy(ledger: str, on_ledger_error: str) -> dict:
    return {"version": 1, "ledger": ledger, "on_ledger_error": on_ledger_error,
            "budgets": [{"scope": "global", "window": "day", "limit_usd": 5, "on_exceed": "alert"}],
            "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]}, "models": {DEEPSEEK: {"quality": 1}}}


async def _served(router, n: int) -> None:
    for _ in range(n):
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)


async def _until(check, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    assert check()


async def test_fail_open_keeps_the_charges_in_memory_and_replays_them_into_the_file(tmp_path, caplog):
    path = tmp_path / "ledger.db"
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy(f"sqlite:///{path}", "fail_open")) as (router, engine):
        await _served(router, 2)
        await _until(lambda: len(_records(path)) == 2)
        os.remove(path)
        with caplog.at_level(logging.ERROR, logger="litellm_payg"):
            await _served(router, 3)  # served, not refused: fail_open
            await _until(lambda: engine.spend.unsettled == 3)
        assert any("was removed while in use" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
        assert not path.exists()
        path.touch()  # the operator chooses to start a fresh file (a restore works the same way)
        await _served(router, 1)
        await _until(lambda: engine.spend.unsettled == 0 and len(_records(path)) == 4)
        assert sum(amount for _, amount in _records(path)) == pytest.approx(4 * MOCK_COST, abs=1e-12)
        assert sum(amount for _, amount in _records(_detached(tmp_path))) == pytest.approx(2 * MOCK_COST, abs=1e-12)


async def test_fail_closed_refuses_while_the_file_is_gone_and_serves_once_it_is_back(tmp_path):
    path = tmp_path / "ledger.db"
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy(f"sqlite:///{path}", "fail_closed")) as (router, engine):
        await _served(router, 1)
        await _until(lambda: len(_records(path)) == 1)
        os.remove(path)
        for _ in range(2):
            with pytest.raises(LedgerDown, match="ledger is unavailable"):
                await _served(router, 1)
        shutil.move(_detached(tmp_path), path)
        await _served(router, 1)
        await _until(lambda: len(_records(path)) == 2 and engine.spend.ledger.open_reservations() == 0)


def test_two_processes_on_the_file_do_not_carry_a_settled_reservation_back(tmp_path):
    """Each connection detects the loss itself; the second to reattach must not re-open a
    reservation the first one already settled in the restored file (it would expire and be charged
    a second time)."""
    path = tmp_path / "ledger.db"
    first, second = open_ledger(f"sqlite:///{path}"), open_ledger(f"sqlite:///{path}")
    assert first.reserve("x", [CAP], 1.0, 60).ok
    os.remove(path)
    for led in (first, second):
        with pytest.raises(LedgerUnavailable):
            led.open_reservations()
    copies = sorted(p for p in tmp_path.iterdir() if ".detached-" in p.name)
    shutil.move(copies[0], path)
    assert first.settle("x", 0.5)
    assert second.open_reservations() == 0  # reattached without carrying "x" back
    assert [r.reservation_id for r in second.records()] == ["x"]
    first.close()
    second.close()
