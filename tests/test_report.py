"""``litellm-payg report`` on a ledger written by real Router traffic, and its HTML in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from litellm_payg.tools.cli import main as cli_main
from litellm_payg.tools.money import usd
from litellm_payg.tools.report import build_report

from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, settled

CHROMIUM = "/usr/bin/chromium"
DAY = 86400.0
LONG = [{"role": "user", "content": "my router drops the connection every few minutes, what can I check " * 12}]
SHORT = [{"role": "user", "content": "opening hours?"}]


def _policy(ledger: str) -> dict:
    return {
        "version": 1,
        "ledger": ledger,
        "models": {DEEPSEEK: {"quality": 0.7}, MISTRAL: {"quality": 0.9}},
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "tiers": [{"up_to_prompt_tokens": 50, "min_quality": 0.6}]}}]},
        "budgets": [
            {"name": "monthly", "scope": "global", "window": "month", "limit_usd": 0.05, "on_exceed": "block"},
            {"name": "per-user", "scope": "user:*", "window": "rolling:30d", "limit_usd": 1.0, "on_exceed": "alert"},
        ],
    }




@pytest.fixture(scope="module")
def traffic_ledger(tmp_path_factory):
    """A SQLite ledger written by real Router traffic over the last 4 simulated days: short requests
    go to DeepSeek, long ones to Mistral; the engine's clock is moved back a day at a time."""
    tmp = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{tmp}/ledger.db"
    model_list = [deployment("chat", DEEPSEEK, "ds", "an answer " * 20), deployment("chat", MISTRAL, "ml", "a longer answer " * 30)]
    real_now = time.time()
    served = {"ds": 0, "ml": 0}

    async def run():
        with attached(model_list, _policy(url)) as (router, engine):
            for day in (3, 2, 1, 0):
                engine.spend.clock = lambda d=day: real_now - d * DAY + 60
                for k in range(3 + day):
                    messages = LONG if k % 2 else SHORT
                    # max_tokens: without a cap a reservation holds the model's whole output limit
                    resp = await router.acompletion(model="chat", messages=messages, max_tokens=200,
                                                    metadata={"user": f"user{k % 2}"})
                    served[resp._hidden_params["model_id"]] += 1
                await settled(engine)
            return engine.policy

    policy = asyncio.run(run())
    return url, policy, served, real_now


def _report_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """The command through the real ``litellm-payg`` entry function: exit code, stdout, stderr."""
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_matches_the_ledger_written_by_router_traffic(traffic_ledger, tmp_path, capsys):
    from litellm_payg.stores.ledger import open_ledger

    url, policy, served, now = traffic_ledger
    with open_ledger(url) as ledger:
        records = ledger.records()
    assert len(records) == sum(served.values()) == 3 + 4 + 5 + 6
    policy_file = tmp_path / "policy.json"  # the CLI takes a YAML file; JSON is YAML
    policy_file.write_text(json.dumps(_policy(url)))
    code, out, _ = _report_cli(["report", "--ledger", url, "--policy", str(policy_file), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["records"] == len(records)
    assert data["total_usd"] == pytest.approx(sum(r.amount_usd for r in records), abs=1e-12)
    assert len(data["by_day"]) == 4  # four distinct days
    by_dep = {r["deployment"]: r for r in data["by_deployment"]}
    assert {k: by_dep[k]["requests"] for k in by_dep} == {k: v for k, v in served.items() if v}
    for dep in by_dep:
        want = sum(r.amount_usd for r in records if r.attrs["deployment"] == dep)
        assert by_dep[dep]["cost_usd"] == pytest.approx(want, abs=1e-12)
    assert set(data["by_provider"]) == {"deepseek", "mistral"}
    assert data["by_provider"]["mistral"] == pytest.approx(by_dep["ml"]["cost_usd"], abs=1e-12)
    scopes = {(s["budget"], s["scope"]) for s in data["by_budget_scope"]}
    assert ("monthly", "global") in scopes and ("per-user", "user:user0") in scopes and ("per-user", "user:user1") in scopes
    budgets = {(b["budget"], b["scope"]): b for b in data["budgets"]}
    monthly = budgets[("monthly", "global")]
    from datetime import datetime, timezone

    month_start = datetime.fromtimestamp(data_now := time.time(), timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    in_month = sum(r.amount_usd for r in records if r.ts >= month_start)
    assert monthly["spent_usd"] == pytest.approx(in_month, abs=1e-9)
    assert monthly["limit_usd"] == 0.05 and monthly["forecast"]
    per_user = budgets[("per-user", "user:user1")]
    assert per_user["spent_usd"] == pytest.approx(sum(r.amount_usd for r in records if r.attrs.get("user") == "user1"), abs=1e-9)
    assert data_now >= now
    code, text, _ = _report_cli(["report", "--ledger", url, "--policy", str(policy_file)], capsys)
    assert "Spend per day" in text and "monthly" in text and "burn $" in text


def test_burn_rate_forecast_says_when_a_calendar_budget_is_hit():
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.stores.ledger.base import Bucket
    from litellm_payg.policy.load import load_policy

    policy = load_policy({"version": 1, "ledger": "memory://",
                          "budgets": [{"name": "m", "scope": "global", "window": "month", "limit_usd": 10}]})
    ledger = open_ledger("memory://")
    start = 1735689600.0  # 2025-01-01T00:00Z
    key = "m|global|month|2025-01"
    for day in range(10):  # $0.5 a day for 10 days
        ledger.reserve(f"r{day}", [Bucket(key, 10, True)], 0.5, 60, now=start + day * DAY + 10)
        ledger.settle(f"r{day}", 0.5, now=start + day * DAY + 10, attrs={"model": "x", "deployment": "x", "provider": "p"})
    report = build_report(ledger, policy, since=start, now=start + 10 * DAY)
    (use,) = report.budgets
    assert use.spent_usd == pytest.approx(5.0)
    assert use.rate_usd_per_day == pytest.approx(0.5)
    assert use.hit_at == pytest.approx(start + 20 * DAY)  # $5 more at $0.5/day
    assert "2025-01-21T00:00:00Z" in use.forecast


def test_bad_since_and_missing_ledger_are_input_errors(capsys):
    code, _, err = _report_cli(["report", "--ledger", "memory://", "--since", "last tuesday"], capsys)
    assert code == 2 and "--since" in err
    code, _, err = _report_cli(["report"], capsys)
    assert code == 2 and "--ledger" in err
    code, _, err = _report_cli(["report", "--ledger", "ftp://x"], capsys)
    assert code == 2 and "unknown ledger URL scheme" in err


# -- the HTML, rendered --------------------------------------------------------------------------


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to render the report")
    return CHROMIUM


def _chromium_args(user_data: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_data}"]


def _png_colours(data: bytes) -> set[bytes]:
    """Distinct pixel colours of an 8-bit RGB/RGBA PNG, decoded with zlib (no PIL needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
            bpp = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[bytes] = set()
    i = 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp))
        prev = line
    return colours


def test_html_report_renders_in_headless_chromium(traffic_ledger, tmp_path, capsys):
    _chromium()  # skips with the reason (fails under CI) when Chromium is missing
    url, _, served, _ = traffic_ledger
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(_policy(url)))
    page = tmp_path / "report.html"
    code, _, _ = _report_cli(["report", "--ledger", url, "--policy", str(policy_file), "--html", str(page)], capsys)
    assert code == 0
    html = page.read_text()
    # one self-contained file: nothing fetched (the SVG namespace is an identifier, not a fetch)
    assert not re.search(r"(src|href)\s*=", html) and "<script" not in html and "@import" not in html

    shot = tmp_path / "shot.png"
    common = _chromium_args(tmp_path / "profile")
    run = subprocess.run(common + [f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"chromium made no screenshot: {run.stderr[-2000:]}"
    colours = _png_colours(shot.read_bytes())
    assert len(colours) >= 8, f"the screenshot looks blank: {len(colours)} colour(s)"
    # the palette colours of the two models' stacked segments are on screen
    assert bytes.fromhex("4e79a7") in colours and bytes.fromhex("f28e2b") in colours

    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert '<svg id="chart-spend-by-model"' in dom and '<svg id="chart-budgets"' in dom
    segments = re.findall(r'<rect id="chart-spend-by-model-(\d{4}-\d\d-\d\d)-\d+" class="seg"', dom)
    assert len(set(segments)) == 4  # a stacked column for each of the four days
    assert len(segments) >= 4 + sum(1 for v in served.values() if v) - 1
    assert re.search(r'<rect id="chart-budgets-use-\d+" class="use"', dom)
    assert re.search(r'<rect id="chart-budgets-limit-\d+" class="limit"', dom)


async def test_report_lists_the_most_expensive_runs(tmp_path, capsys):
    """Runs are the records' session ids: a runaway run (12 requests) is listed before two short
    ones, with its request count and what it cost, as the ledger recorded it."""
    url = f"sqlite:///{tmp_path}/runs.db"
    policy = {"version": 1, "ledger": url, "models": {DEEPSEEK: {"quality": 0.7}},
              "routes": {"chat": [{"quality_floor": {"min_quality": 0.5}}]}}
    with attached([deployment("chat", DEEPSEEK, "ds")], policy) as (router, engine):
        for run, n in (("run-short", 2), ("run-away", 12), ("run-mid", 4)):
            for i in range(n):
                await router.acompletion(model="chat", messages=SHORT, litellm_session_id=run)
        await router.acompletion(model="chat", messages=SHORT)  # no run: not listed
        await settled(engine)
        records = engine.spend.ledger.records()
    cost = {run: sum(r.amount_usd for r in records if r.attrs.get("session") == run) for run in ("run-away", "run-mid", "run-short")}
    assert cost["run-away"] > cost["run-mid"] > cost["run-short"] > 0
    report = build_report(url)
    assert [(r["session"], r["requests"]) for r in report.top_runs] == [("run-away", 12), ("run-mid", 4), ("run-short", 2)]
    assert report.top_runs[0]["cost_usd"] == pytest.approx(cost["run-away"], abs=1e-12)
    assert report.top_runs[0]["models"] == {DEEPSEEK: 12}
    code, out, _ = _report_cli(["report", "--ledger", url], capsys)
    assert code == 0
    section = out.split("Most expensive runs", 1)[1]
    assert section.index("run-away") < section.index("run-mid") < section.index("run-short")
    assert f"{usd(cost['run-away']):>14}" in section  # four significant digits (money.usd), not $0.000134
