"""The HTML pages say what the tables say: each page (``simulate`` on the support-bot and agent-runs
scenarios, ``report``, ``what-if``) is written by the real command, opened in headless Chromium, and
its *rendered* text (``innerText``, what a reader sees; the charts' SVG text and the fill each bar is
painted with) is checked against the table the same command printed.

Chromium is driven over its DevTools pipe (``--remote-debugging-pipe``: JSON messages on fds 3 and
4), with the standard library only. Under CI a missing Chromium fails; elsewhere the tests skip with
the reason.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from litellm_payg.tools.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "litellm_payg" / "tools" / "scenarios"
CHROMIUM = "/usr/bin/chromium"
#: what the page shows, read in the browser: the body's rendered text, and per chart its SVG text lines
#: and per bar its label (the bar's <title>), class and the fill Chromium paints it with, per point its <title>
_READ = """(() => {
  const charts = {};
  for (const svg of document.querySelectorAll('svg[id]')) {
    charts[svg.id] = {text: [...svg.querySelectorAll('text')].map(t => t.textContent).join('\\n'), bars: [...svg.querySelectorAll('rect.bar')].map(r => ({
      title: r.querySelector('title').textContent, cls: r.getAttribute('class'),
      fill: getComputedStyle(r).fill, width: r.getBoundingClientRect().width})),
      points: [...svg.querySelectorAll('circle.point')].map(c => ({title: c.querySelector('title').textContent,
                                                                   width: c.getBoundingClientRect().width}))};
  }
  return JSON.stringify({text: document.body.innerText, charts});
})()"""
#: "$0.00" for an amount that is not zero: the digits a fixed two decimals throw away
_LOST_DIGITS = re.compile(r"\$0\.00(?![0-9])")


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to render the pages")
    return CHROMIUM


class _DevTools:
    """Chromium with ``--remote-debugging-pipe``: commands go in on its fd 3, answers come out of
    its fd 4, each a JSON message ended by a NUL byte."""

    def __init__(self, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: its fds 3 and 4 are the pipes' ends
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4, to_chrome_r, from_chrome_w), preexec_fn=wire,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id = b"", 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                    raise AssertionError(f"chromium did not answer {method} in {timeout:g} s")
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise AssertionError(f"chromium exited: {self.proc.stderr.read().decode()[-2000:]}")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self._id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]

    def read(self, page: Path) -> dict:
        """The page loaded in a new tab, then ``_READ`` evaluated in it."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.navigate", {"url": page.as_uri()}, session)
        for _ in range(400):
            state = self.call("Runtime.evaluate", {"expression": "document.readyState"}, session)["result"]["value"]
            if state == "complete":
                break
            time.sleep(0.025)
        value = self.call("Runtime.evaluate", {"expression": _READ, "returnByValue": True}, session)["result"]["value"]
        self.call("Target.closeTarget", {"targetId": target})
        return json.loads(value)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except AssertionError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture(scope="module")
def browser():
    _chromium()
    with tempfile.TemporaryDirectory() as profile:
        tools = _DevTools(Path(profile))
        try:
            yield tools
        finally:
            tools.close()


def _cli(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 0
    return capsys.readouterr().out


def _scaled(name: str, tmp_path: Path, requests: int = 100, runs: int = 10) -> Path:
    """A bundled scenario with each class's count divided by ``requests`` and each runs line's by
    ``runs`` (the same shapes, policy and baselines, in seconds)."""
    out = []
    for line in (SCENARIOS / f"{name}.jsonl").read_text().splitlines():
        item = json.loads(line)
        if "runs" in item:
            item["runs"]["count"] = max(1, item["runs"]["count"] // runs)
        elif "count" in item:
            item["count"] = max(1, item["count"] // requests)
        out.append(json.dumps(item))
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def _words(s: str) -> str:
    return " ".join(s.split())


def _section(table: str, heading: str) -> list[str]:
    """The lines of a table section, from its heading to the next blank line."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def _self_contained(page: Path) -> None:
    html = page.read_text()
    assert "<script" not in html and "@import" not in html and not re.search(r"(src|href)\s*=", html)


# -- simulate ------------------------------------------------------------------------------------


def test_simulate_chart_marks_the_baselines_that_miss_the_quality_bar(browser, tmp_path, capsys):
    page = tmp_path / "support-bot.html"
    traffic = _scaled("support-bot", tmp_path)  # 3,000 FAQ + 2,000 troubleshooting requests
    table = _cli(["simulate", str(REPO / "policies" / "support-bot.yaml"), "--traffic", str(traffic), "--html", str(page)], capsys)
    _self_contained(page)
    shown = browser.read(page)
    text = shown["text"]

    # the table's marks: "<label> (bar missed: N)" per baseline sending requests below their bar
    marked = dict(re.findall(r"^(.+?) \(bar missed: ([\d,]+)\)", "\n".join(_section(table, "Same traffic under baselines")), re.M))
    assert marked == {"only deepseek/deepseek-chat": "2,000", "only gpt-4o-mini": "2,000", "LiteLLM cost-based-routing": "2,000"}
    bars = {b["title"].split(": $")[0]: b for b in shown["charts"]["chart-baselines"]["bars"]}
    assert "policy (support-bot.yaml)" in bars and len(bars) >= 7
    for label, bar in bars.items():
        assert bar["width"] > 0, label
        if label in marked:
            # the chart says it with the table's words, and paints the bar hatched, not in a colour
            assert f"(bar missed: {marked[label]} requests below the quality bar)" in bar["title"], bar
            assert bar["cls"] == "bar missed" and bar["fill"].startswith("url("), bar
        else:
            assert "bar missed" not in bar["title"] and not bar["fill"].startswith("url("), bar
    chart_text = shown["charts"]["chart-baselines"]["text"]
    assert chart_text.count("bar missed: 2,000 requests below the quality bar") == 3
    # the cheap single model is not left looking better than the policy: the same row in the page's table
    assert "only deepseek/deepseek-chat\t5,000\t$1.14\t0.46x\tbar missed: 2,000" in text
    assert _words(_section(table, "Budget hits")[0]) in _words(text)
    assert not _LOST_DIGITS.search(text)


def test_simulate_agent_runs_page_has_the_runs_comparison_and_the_downgrades(browser, tmp_path, capsys):
    page = tmp_path / "agent-runs.html"
    traffic = _scaled("agent-runs", tmp_path)  # 100 runs, 3 of them runaway
    table = _cli(["simulate", str(REPO / "policies" / "agent-runs.yaml"), "--traffic", str(traffic), "--html", str(page)], capsys)
    _self_contained(page)
    shown = browser.read(page)
    text = _words(shown["text"])

    runs = _section(table, "Agent runs:")
    assert "the same runs three ways" in runs[0] and _words(runs[0]) in text
    variants = [line for line in runs[3:] if not line.startswith("  ")]
    assert [v.split("  ")[0] for v in variants] == ["no run caps", "hard cap", "policy as written"]
    for line in variants:  # each variant's row, cell for cell, as the table prints it
        assert _words(line) in text, line
    for note in (line.strip() for line in runs if line.startswith("  ")):
        assert _words(note) in text, note
    totals = shown["charts"]["chart-runs"]["bars"]
    assert [b["title"].split(": total")[0] for b in totals] == ["no run caps", "hard cap", "policy as written"]

    # the downgrades: the count the table gives is the count the page gives where it says "downgraded"
    hits = _section(table, "Budget hits")[0]
    downgraded = int(re.search(r"; ([\d,]+) routed by a run budget's downgrade steps", hits).group(1).replace(",", ""))
    assert downgraded > 0
    assert _words(hits) in text
    assert re.search(rf"budget blocked downgraded .*run budget downgrade steps - {downgraded:,}\b", text)
    assert f"{downgraded:,} requests of " in text and "routed by the downgrade steps" in text
    assert not _LOST_DIGITS.search(text)


# -- report --------------------------------------------------------------------------------------


def test_report_page_keeps_the_digits_of_a_small_limit(browser, tmp_path, capsys):
    """A $0.0005 budget limit (and charges of $0.0002) read as such, in the chart and the tables."""
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.stores.ledger.base import Bucket

    url = f"sqlite:///{tmp_path}/ledger.db"
    policy = tmp_path / "policy.json"  # the CLI takes a YAML file; JSON is YAML
    policy.write_text(json.dumps({"version": 1, "ledger": url, "budgets": [
        {"name": "tiny", "scope": "global", "window": "month", "limit_usd": 0.0005, "on_exceed": "block"}]}))
    now = time.time()
    key = f"tiny|global|month|{datetime.fromtimestamp(now, timezone.utc):%Y-%m}"
    with open_ledger(url) as ledger:
        for i in range(2):
            ledger.reserve(f"r{i}", [Bucket(key, 0.0005, True)], 0.0002, 60, now=now)
            ledger.settle(f"r{i}", 0.0002, now=now, attrs={"model": "deepseek/deepseek-chat", "deployment": "ds", "provider": "deepseek"})
    page = tmp_path / "report.html"
    table = _cli(["report", "--ledger", url, "--policy", str(policy), "--html", str(page)], capsys)
    _self_contained(page)
    shown = browser.read(page)
    text = shown["text"]
    assert "of $0.0005 " in table and not _LOST_DIGITS.search(table)
    assert "80% of $0.0005" in shown["charts"]["chart-budgets"]["text"]
    assert re.search(r"tiny\tglobal\tmonth\t\$0\.0004\t\$0\t\$0\.0005\t80\.0%", text), text
    assert "ds\tdeepseek/deepseek-chat\tdeepseek\t2\t$0.0004" in text  # per deployment
    assert not _LOST_DIGITS.search(text)


# -- what-if -------------------------------------------------------------------------------------


def test_whatif_page_keeps_the_digits_of_small_amounts(browser, tmp_path, capsys):
    """Requests that cost $0.0005 each read "$0.0005" on the page, as in the table."""
    history = tmp_path / "history.jsonl"
    rows = [{"request_id": f"q{i}", "start_time": 1735689600 + 60 * i, "model_group": "support",
             "model": "mistral/mistral-large-latest", "prompt_tokens": 150, "completion_tokens": 50, "spend_usd": 0.0005}
            for i in range(3)]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = tmp_path / "whatif.html"
    table = _cli(["what-if", str(REPO / "policies" / "support-bot.yaml"), "--from", str(history), "--html", str(page)], capsys)
    _self_contained(page)
    shown = browser.read(page)
    text = shown["text"]
    paid = re.search(r"^total\s+3\s+(\$\S+)\s+(\$\S+)\s+\S+\s+(\$\S+)", table, re.M)  # paid, policy, change, oracle
    assert paid.group(1) == "$0.0015"
    assert f"Paid {paid.group(1)}; the policy would have paid {paid.group(2)}" in text
    assert re.search(r"q0\t\S+\t.*\t\$0\.0005\tmistral/mistral-large-latest\t", text), text
    # one day of history is three dots on the daily chart (a one-point line draws nothing), with the amounts
    points = shown["charts"]["chart-daily"]["points"]
    assert [p["title"] for p in points if p["width"] > 0] == [
        f"2025-01-01 paid: {paid.group(1)}", f"2025-01-01 policy: {paid.group(2)}", f"2025-01-01 oracle: {paid.group(3)}"]
    assert not _LOST_DIGITS.search(text) and not _LOST_DIGITS.search(table)


# -- quality -------------------------------------------------------------------------------------


def test_quality_page_says_what_the_table_says(browser, tmp_path, capsys):
    """Per route x deployment: n, estimate, interval (drawn: a dot per estimate, titled with the same
    words), $/request; the cheapest deployment meeting the bar, the saving, and a split's verdict."""
    from litellm_payg.stores.evidence import cell_key, open_evidence
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.stores.ledger.base import Bucket

    a, b = "mistral/mistral-large-latest", "deepseek/deepseek-chat"
    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url) as ledger:
        for i, (dep, model, cost) in enumerate([("ml", a, 0.01)] * 6 + [("ds", b, 0.0002)] * 4):
            ledger.reserve(f"r{i}", [Bucket("none", 1.0, False)], cost, 60, now=1000.0)
            ledger.settle(f"r{i}", cost, now=1000.0, attrs={"group": "support", "deployment": dep, "model": model})
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "version": 1, "ledger": url, "models": {a: {"quality": 0.9}, b: {"quality": 0.8}}, "quality": {"half_life_s": None},
        "routes": {"support": [{"quality_floor": {"min_quality": 0.85, "measured": {}}}],
                   "chat": [{"split": {"arms": [{"model": a, "weight": 95, "name": "incumbent"},
                                                {"model": b, "weight": 5, "name": "new-model"}]}}]}}))
    store = open_evidence(url)
    for dep, model, passes, fails in (("ds", b, 190, 10), ("ml", a, 60, 2), ("cheap", b, 5, 15)):
        for i in range(passes + fails):
            store.add("support", cell_key(dep, "", "valid"), 1.0 if i < passes else 0.0, None, now=1000.0,
                      record={"deployment_id": dep, "model": model, "cls": "", "metric": "valid", "source": "validator"})
    for arm, dep, model, rate, cost in (("incumbent", "ml", a, 0.85, 0.01), ("new-model", "ds", b, 0.95, 0.004)):
        for i in range(1000):
            store.add("chat", cell_key(dep, "", "valid"), 1.0 if i % 20 < rate * 20 else 0.0, None, now=1000.0,
                      record={"deployment_id": dep, "model": model, "cls": "", "metric": "valid", "arm": arm,
                              "cost_usd": cost, "source": "feedback"})
    store.close()
    page = tmp_path / "quality.html"
    table = _cli(["quality", str(policy), "--html", str(page)], capsys)
    _self_contained(page)
    shown = browser.read(page)
    text = shown["text"]

    support = _section(table, "route support:")
    rows = [line.split() for line in support[2:] if re.match(r"  \w+ +\* ", line)]
    assert [r[0] for r in rows] == ["cheap", "ds", "ml"]
    points = {p["title"].split(":")[0]: p for p in shown["charts"]["chart-quality-1"]["points"]}
    for dep, cls, n, est, lo, hi, cost, verdict in rows:
        # the table's row, cell for cell, in the page's table (with the model), and on the chart
        assert re.search(rf"^{dep}\t[^\t]+\t\*\t{n}\t{est}\t{re.escape(lo + ' ' + hi)}\t{re.escape(cost)}\t{verdict}$", text, re.M), dep
        assert points[dep]["title"] == f"{dep}: {est} {lo} {hi} n = {n}, {verdict}" and points[dep]["width"] > 0
    assert {r[0]: r[-1] for r in rows} == {"cheap": "below", "ds": "meets", "ml": "meets"}
    assert "bar 0.85" in shown["charts"]["chart-quality-1"]["text"]
    for line in support:
        if line.startswith("  cheapest") or line.startswith("  routing on the estimates"):
            assert line.strip() in text, line
    assert "10 requests at $0.00608 each as served; at $0.0002 each on ds" in text  # (6 x 0.01 + 4 x 0.0002) / 10
    assert "$0.0588 saved" in text  # 10 x (0.00608 - 0.0002)

    split = _section(table, "route chat:")
    sentence = split[-1].strip()
    assert sentence.endswith(": promote") and sentence in text
    assert _words(split[-2]) in _words(text)  # the difference and its anytime-valid interval
    for arm in ("incumbent", "new-model"):
        line = next(x for x in split if x.strip().startswith(arm))
        per_request = re.search(r"\$/request (\$\S+ \[\S+, \S+\])", line).group(1)
        assert re.search(rf"^{arm}\t1,000\t\S+\t{re.escape(per_request)}\t", text, re.M), (arm, per_request)
    assert not _LOST_DIGITS.search(text) and not _LOST_DIGITS.search(table)
