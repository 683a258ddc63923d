import os

# LiteLLM fetches its price map from the network at import unless told otherwise; tests are offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# >>> provider cassettes & stand-in (owner: stand-in/cassette helper) >>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>
# Cassettes live in <repo>/cassettes/<test module>/<test name>.yaml and replay with
# --record-mode=none (pyproject addopts), so a missing cassette fails instead of calling out.
#
# Re-record live:      pytest tests/test_provider_replay.py --record-mode=rewrite   (real API keys in env)
# Re-record offline:   PAYG_RECORD_AGAINST=standin pytest tests/test_provider_replay.py --record-mode=rewrite
#   LiteLLM then talks to the local stand-in (standin) and `before_record_request`
#   rewrites each recorded URI back to the provider's real URL, so the cassette replays against
#   LiteLLM's default api_base exactly like a live recording.
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import pytest  # noqa: E402

from standin import StandIn  # noqa: E402
from litellm_payg.tools.cassette_match import STRICT_MATCH_ON  # noqa: E402
from litellm_payg.tools.cassette_match import register as register_matchers  # noqa: E402



def _import_the_package_up_front() -> None:
    """Import (and so compile: pytest rewrites the asserts of a plugin's whole distribution) every
    module of the package now, in the main thread, before any test starts a thread.

    Why: CPython 3.11 before 3.11.8 keeps the AST constructor's recursion depth in state shared by
    threads (python/cpython#106905); a module imported for the first time in LiteLLM's or a ledger's
    thread while another thread compiles fails with ``SystemError: AST constructor recursion depth
    mismatch``. It failed ``tests/test_when.py`` once on a fresh clone. ``litellm_payg.proxy`` is left
    out: importing it warns (its deprecation), which a test checks in a subprocess."""
    import importlib
    import pkgutil

    import litellm_payg

    for module in pkgutil.walk_packages(litellm_payg.__path__, "litellm_payg."):
        if module.name == "litellm_payg.proxy":
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional extra not installed: its tests say so themselves
            pass


_import_the_package_up_front()

GUARD_DIR = Path(__file__).resolve().parent / "offline_guard"
NETLOG = pytest.StashKey[Path]()


def network_guarded(config: pytest.Config) -> bool:
    """The suite is offline unless it is re-recording cassettes (``--record-mode`` other than
    ``none``), which needs the live providers."""
    return config.getoption("--record-mode", default="none") == "none"


def pytest_configure(config: pytest.Config) -> None:
    """Block every non-loopback connection, in this process and (through ``sitecustomize`` on
    ``PYTHONPATH``) in every Python subprocess the suite starts; log each attempt. The session
    fails in ``pytest_sessionfinish`` if any was made, so "the suite makes no network connection
    outside 127.0.0.1" is checked on every run, not on a sample."""
    if not network_guarded(config) or hasattr(config, "workerinput"):
        return
    import tempfile

    log = Path(tempfile.mkstemp(prefix="payg-netlog-", suffix=".txt")[1])
    os.environ["PAYG_NETLOG"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(GUARD_DIR), os.environ.get("PYTHONPATH")) if p)
    import importlib.util

    spec = importlib.util.spec_from_file_location("payg_offline_guard", GUARD_DIR / "sitecustomize.py")
    guard = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(guard)  # installs itself: PAYG_NETLOG is set
    config.stash[NETLOG] = log


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    log = session.config.stash.get(NETLOG, None)
    if log is None or not log.exists():
        return
    attempts = log.read_text()
    log.unlink()
    if attempts:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "non-loopback network attempts were made (and refused) during this run:\n" + attempts, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _litellm_callback_lists_as_found() -> Iterator[None]:
    """Before LiteLLM 1.110 every Router stays alive and keeps its own callbacks in LiteLLM's
    process-wide lists, which hold at most ``MAX_CALLBACKS``: a few dozen Routers into a run, LiteLLM
    refuses new callbacks. Each test leaves those lists as it found them there, so tests do not
    depend on how many Routers ran before them. (From 1.110 Routers are collected, and this does
    nothing.)"""
    from litellm_payg.adapter import litellm_versions

    if litellm_versions.at_least((1, 110)):
        yield
        return
    import litellm

    names = ("callbacks", "success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback")
    before = {name: list(getattr(litellm, name)) for name in names}
    yield
    for name, items in before.items():
        getattr(litellm, name)[:] = items


def pytest_sessionstart(session: pytest.Session) -> None:
    """A user's process gets the LiteLLM repairs (litellm_payg.adapter.litellm_fixes) when it attaches a
    policy; the suite applies them up front, so how LiteLLM reads a Groq answer in one test does not
    depend on whether an earlier test attached. tests/test_litellm_fixes.py checks the unrepaired
    LiteLLM code still has each defect."""
    from litellm_payg.adapter import litellm_fixes

    litellm_fixes.apply()


REPO_ROOT = Path(__file__).resolve().parents[1]
CASSETTES_DIR = REPO_ROOT / "cassettes"

# Credentials never reach a cassette: these request headers and query params are dropped on record.
SCRUBBED_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
SCRUBBED_QUERY_PARAMS = ("key",)
# Response headers that identify an account or session rather than the wire format.
_DROPPED_RESPONSE_HEADERS = ("set-cookie", "openai-organization", "openai-project", "anthropic-organization-id")


def record_against() -> str | None:
    """``PAYG_RECORD_AGAINST``: ``standin`` records against the local stand-in; unset means live."""
    value = os.environ.get("PAYG_RECORD_AGAINST") or None
    if value not in (None, "standin"):
        raise pytest.UsageError(f"PAYG_RECORD_AGAINST={value!r}: expected 'standin' or unset (live providers)")
    return value


@pytest.fixture(scope="module")
def _standin_server() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def standin(_standin_server: StandIn) -> Iterator[StandIn]:
    """The local fault-injecting provider (``standin``): one server per test module,
    with no reply, fault or hit left over from the previous test."""
    _standin_server.reset()
    yield _standin_server
    _standin_server.reset()


@pytest.fixture
def warnings_seen(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The plugin's warnings (attached to its own logger: the proxy module may stop propagation)."""
    import logging

    plugin_logger = logging.getLogger("litellm_payg")
    plugin_logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger="litellm_payg")
    yield caplog
    plugin_logger.removeHandler(caplog.handler)


@pytest.fixture(scope="session")
def recording_standin() -> Iterator[StandIn | None]:
    """The stand-in that plays the providers while recording with ``PAYG_RECORD_AGAINST=standin``."""
    if record_against() != "standin":
        yield None
        return
    with StandIn() as standin:
        yield standin


@pytest.fixture
def provider_api_base(recording_standin: StandIn | None) -> Callable[[str], str | None]:
    """``api_base`` for a provider call in a cassette test: the stand-in's while recording against
    it, else ``None`` (LiteLLM's default, which is what replay matches)."""

    def api_base(provider: str) -> str | None:
        return recording_standin.url(provider) if recording_standin is not None else None

    return api_base


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(CASSETTES_DIR / request.module.__name__.split(".")[-1])


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    """pytest-recording's VCR learns the strict answer-field matchers ``vcr_config`` names."""
    register_matchers(vcr)


@pytest.fixture(scope="module")
def vcr_config(recording_standin: StandIn | None) -> dict[str, Any]:
    def before_record_request(req: Any) -> Any:
        if recording_standin is not None:
            req.uri = recording_standin.real_uri(req.uri)
            for name in [h for h in req.headers if h.lower() == "host"]:
                req.headers[name] = req.host  # the real provider's host, as a live recording has
        return req

    def before_record_response(resp: dict[str, Any]) -> dict[str, Any]:
        headers = resp.get("headers") or {}
        for name in list(headers):
            if name.lower() in _DROPPED_RESPONSE_HEADERS:
                del headers[name]
        return resp

    return {
        "filter_headers": list(SCRUBBED_HEADERS),
        "filter_query_parameters": list(SCRUBBED_QUERY_PARAMS),
        # Strict: a recording answers only the request it recorded (model, messages, max_tokens, stream,
        # answer-changing parameters, read from the parsed JSON body: key order and LiteLLM's other
        # additions don't count). See litellm_payg.tools.cassette_match.
        "match_on": STRICT_MATCH_ON,
        "before_record_request": before_record_request,
        "before_record_response": before_record_response,
        "decode_compressed_response": True,
    }


# <<< provider cassettes & stand-in <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<
