"""Offline replay: what would this policy have cost on recorded traffic?

``litellm-payg replay POLICY CASSETTES... --config litellm-config.yaml [--group G] [--match-on MODE] [--json]``

Each chat request recorded in a vcrpy cassette (OpenAI-style ``/chat/completions``, Anthropic
``/v1/messages``, Gemini ``:generateContent``) is sent again, with its messages, ``max_tokens``,
``stream``, ``user`` and (OpenAI-style recordings) its sampling and tool parameters, through a
LiteLLM ``Router`` built from the config's ``model_list`` and governed by the policy (with a
``memory://`` ledger: a replay never touches a real ledger). vcrpy answers every provider call from
the cassettes (``record_mode="none"``), so LiteLLM prices the recorded usage exactly as it would in
production. No network.

Which recorded answer serves a replayed request (``match_on``, ``--match-on``):

* ``strict`` (the default): only a recording of this request on the model the policy picked -- the
  same model, messages, max_tokens, stream and answer-changing parameters
  (:mod:`litellm_payg.tools.cassette_match`). A request the policy sends to a deployment it was not
  recorded on is a row with an error naming the closest recording and the field that differs
  (usually ``model``), never an answer to something else.
* ``endpoint``: the request's own recording when it has one on the chosen provider endpoint and
  model (the row says ``exact``), otherwise the first recording of that endpoint -- an approximation
  the user opts into.

To compare deployments exactly, record each request against every deployment ("shadow recording",
as ``tests/sample_user_project/record.py`` does): the same messages, max_tokens, stream and user
recorded several times in one cassette are one request, replayed once, answered by the recording of
whichever deployment the policy picks. (So two identical requests in one cassette count once.)

Which model group a recorded request goes to: ``group=`` (``--group``) for all of them; otherwise the
group of the config deployment whose model is the recorded model (with or without its provider
prefix), or the recorded model itself when it is a group name. Anything else is a
:class:`ReplayError` naming the request.

The Python API (``replay``, ``areplay``, ``ReplayReport``) is what the pytest plugin
(``litellm_payg.tools.testing``) builds on.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from litellm_payg.core.errors import PaygError
from litellm_payg.tools.cassette_match import ANSWER_PARAMS, STRICT_MATCH_ON, register, resolve_match_on, tag_origin

__all__ = ["ReplayError", "RecordedRequest", "ReplayRow", "ReplayReport", "load_requests", "load_model_list",
           "replay", "areplay", "add_parser", "run"]

#: the api_key given to deployments whose config names none (or an unset ``os.environ/...``): replay
#: never reaches a provider, but LiteLLM's clients refuse to build a request without a key.
REPLAY_API_KEY = "sk-replay-not-a-key"
_CHAT_SUFFIXES = ("/chat/completions", "/v1/messages", ":generateContent", ":streamGenerateContent")


class ReplayError(PaygError):
    """A cassette, config or recorded request that cannot be replayed; says which and why."""


# -- reading cassettes ---------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One recorded chat request, in OpenAI chat form, and where it came from."""

    cassette: Path
    index: int  # interaction index in the cassette
    method: str
    uri: str
    model: str | None
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    stream: bool = False
    user: str | None = None
    #: the answer-changing parameters of an OpenAI-style recording (temperature, tools, ...), sent again
    params: dict[str, Any] = field(default_factory=dict)
    #: interaction indices of this same request recorded against other deployments (shadow
    #: recordings), this one first; each answers when the policy picks its provider endpoint
    recordings: list[int] = field(default_factory=list)
    recorded_models: list[str | None] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.cassette}#{self.index}"


def _cassette_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")])
            if not found:
                raise ReplayError(f"{p}: no cassette (*.yaml) in this directory")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ReplayError(f"{p}: no such cassette file or directory")
    return files


def _interactions(path: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReplayError(f"{path}: not a readable vcrpy cassette: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("interactions"), list):
        raise ReplayError(f"{path}: not a vcrpy cassette (no 'interactions:' list)")
    return data["interactions"]


def _request_json(request: Mapping[str, Any]) -> Any:
    if "parsed_body" in request:  # pydantic-ai's variant of the format
        return request["parsed_body"]
    body = request.get("body")
    if isinstance(body, Mapping):
        body = body.get("string")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _text_of(content: Any) -> Any:
    """Anthropic/Gemini content blocks to OpenAI content (plain text parts kept)."""
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, Mapping) and b.get("text")]
        return "\n".join(texts)
    return content


def _to_openai(uri: str, body: Mapping[str, Any]) -> tuple[str | None, list[dict[str, Any]], int | None]:
    path = urlsplit(uri).path
    if path.endswith("/v1/messages"):  # Anthropic
        messages = [{"role": m.get("role", "user"), "content": _text_of(m.get("content"))} for m in body.get("messages") or []]
        if body.get("system"):
            messages.insert(0, {"role": "system", "content": _text_of(body["system"])})
        return body.get("model"), messages, body.get("max_tokens")
    if ":generateContent" in path or ":streamGenerateContent" in path:  # Gemini: the model is in the path
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        messages = [
            {"role": "assistant" if c.get("role") == "model" else "user", "content": _text_of(c.get("parts"))}
            for c in body.get("contents") or []
        ]
        system = body.get("systemInstruction") or body.get("system_instruction")
        if system:
            messages.insert(0, {"role": "system", "content": _text_of(system.get("parts"))})
        gen = body.get("generationConfig") or {}
        return model, messages, gen.get("maxOutputTokens")
    return body.get("model"), list(body.get("messages") or []), body.get("max_completion_tokens") or body.get("max_tokens")


def _openai_params(uri: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer-changing parameters of an OpenAI-style chat body, which LiteLLM accepts as they are
    (Anthropic and Gemini spell them differently: not sent again, so a strict replay names them)."""
    path = urlsplit(uri).path
    if path.endswith("/v1/messages") or ":generateContent" in path or ":streamGenerateContent" in path:
        return {}
    return {k: body[k] for k in ANSWER_PARAMS if body.get(k) is not None}


def load_requests(paths: Iterable[str | os.PathLike[str]]) -> list[RecordedRequest]:
    """Every recorded chat request in these cassette files/directories, in file then recording order."""
    out: list[RecordedRequest] = []
    for path in _cassette_files(paths):
        seen: dict[str, RecordedRequest] = {}
        for i, interaction in enumerate(_interactions(path)):
            request = interaction.get("request") or {}
            uri = str(request.get("uri") or "")
            if str(request.get("method", "")).upper() != "POST" or not urlsplit(uri).path.endswith(_CHAT_SUFFIXES):
                continue
            body = _request_json(request)
            if not isinstance(body, Mapping):
                raise ReplayError(f"{path}#{i}: recorded chat request has no JSON body")
            model, messages, max_tokens = _to_openai(uri, body)
            if not messages:
                raise ReplayError(f"{path}#{i}: recorded chat request has no messages")
            stream = bool(body.get("stream")) or ":streamGenerateContent" in uri
            user = body.get("user") or (body.get("metadata") or {}).get("user_id")
            params = _openai_params(uri, body)
            key = json.dumps([messages, max_tokens, stream, user, params], sort_keys=True, default=str)
            same = seen.get(key)
            if same is not None:  # the same request recorded against another deployment
                same.recordings.append(i)
                same.recorded_models.append(model)
                continue
            seen[key] = rec = RecordedRequest(path, i, "POST", uri, model, messages, max_tokens, stream, user, params,
                                                 [i], [model])
            out.append(rec)
    if not out:
        raise ReplayError("no recorded chat requests in " + ", ".join(str(p) for p in paths))
    return out


# -- the LiteLLM config --------------------------------------------------------------------------


def load_model_list(config: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A LiteLLM ``model_list`` from a config.yaml path, a parsed config or a model_list, made
    replayable: each deployment gets an id (``model_info.id``, else ``<model_name>-<index>`` as
    ``litellm-payg check --config`` names them) and an api_key if it has none."""
    source = "<config>"
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        try:
            config = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ReplayError(f"{source}: cannot read LiteLLM config: {exc}") from None
    model_list = config.get("model_list") if isinstance(config, Mapping) else config
    if not isinstance(model_list, Sequence) or isinstance(model_list, str) or not model_list:
        raise ReplayError(f"{source}: a LiteLLM config needs a non-empty model_list")
    out = []
    for i, entry in enumerate(model_list):
        if not isinstance(entry, Mapping) or "model_name" not in entry or not (entry.get("litellm_params") or {}).get("model"):
            raise ReplayError(f"{source}: model_list[{i}] needs model_name and litellm_params.model")
        d = {**entry, "litellm_params": dict(entry["litellm_params"]), "model_info": dict(entry.get("model_info") or {})}
        d["model_info"].setdefault("id", f"{d['model_name']}-{i}")
        key = d["litellm_params"].get("api_key")
        if key is None or (isinstance(key, str) and key.startswith("os.environ/") and not os.environ.get(key[11:])):
            d["litellm_params"]["api_key"] = REPLAY_API_KEY
        out.append(d)
    return out


def _group_for(req: RecordedRequest, model_list: Sequence[Mapping[str, Any]], group: str | None) -> str:
    if group:
        return group
    groups = {str(d["model_name"]) for d in model_list}
    if req.model in groups:
        return str(req.model)
    for d in model_list:
        model = str(d["litellm_params"]["model"])
        if req.model and req.model in (model, model.split("/", 1)[-1]):
            return str(d["model_name"])
    raise ReplayError(
        f"{req.where}: recorded model {req.model!r} is no deployment's model and no group in the config "
        f"(groups: {', '.join(sorted(groups))}); pass group= (--group) to send every request to one group"
    )


# -- the report ----------------------------------------------------------------------------------


@dataclass
class ReplayRow:
    """One replayed request: where it went and what it cost (the ledger's settled amount)."""

    cassette: str
    index: int
    group: str
    recorded_model: str | None
    deployment: str | None = None
    model: str | None = None
    provider: str | None = None
    user: str | None = None
    split_arm: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    exact: bool = False  # answered by this request's own recorded response
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ReplayReport:
    """The rows of one replay, the ledger records behind them, and totals."""

    policy: str | None
    rows: list[ReplayRow] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)  # SpendRecord of the replay's memory ledger

    @property
    def total_usd(self) -> float:
        return sum(r.amount_usd for r in self.records)

    @property
    def errors(self) -> list[ReplayRow]:
        return [r for r in self.rows if r.error]

    def spend(self, scope: str | None = None) -> float:
        """Settled USD, in total or for one scope: ``provider:deepseek``, ``model:mistral/...``,
        ``deployment:ID``, ``group:chat``, ``user:alice``, ``team:...``, ``split_arm:new-model``,
        ``tag:...``."""
        return spend_of(self.records, scope)

    def by_deployment(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            if row.deployment is None:
                continue
            d = out.setdefault(row.deployment, {"model": row.model, "requests": 0, "tokens": 0, "cost_usd": 0.0})
            d["requests"] += 1
            d["tokens"] += row.tokens
            d["cost_usd"] += row.cost_usd
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "requests": [{**dataclasses.asdict(r), "tokens": r.tokens} for r in self.rows],
            "by_deployment": self.by_deployment(),
            "total_usd": self.total_usd,
            "errors": len(self.errors),
        }

    def table(self) -> str:
        lines = []
        header = f"{'request':<34} {'group':<12} {'deployment':<22} {'model':<32} {'user':<10} {'arm':<10} {'tokens':>7} {'cost $':>12}"
        lines += [header, "-" * len(header)]
        for r in self.rows:
            where = f"{Path(r.cassette).name}#{r.index}"
            if r.error:
                lines.append(f"{where[:34]:<34} {r.group[:12]:<12} ERROR: {r.error.splitlines()[0][:300]}")
                continue
            lines.append(
                f"{where[:34]:<34} {r.group[:12]:<12} {str(r.deployment)[:22]:<22} {str(r.model)[:32]:<32} "
                f"{(r.user or '-')[:10]:<10} {(r.split_arm or '-')[:10]:<10} {r.tokens:>7} {r.cost_usd:>12.9f}"
                + ("" if r.exact else "  (approx.: not recorded on this deployment)")
            )
        lines += ["", f"{'deployment':<22} {'model':<32} {'requests':>8} {'tokens':>9} {'cost $':>12}"]
        lines.append("-" * len(lines[-1]))
        for dep, d in sorted(self.by_deployment().items()):
            lines.append(f"{dep[:22]:<22} {str(d['model'])[:32]:<32} {d['requests']:>8} {d['tokens']:>9} {d['cost_usd']:>12.9f}")
        lines.append(f"{'total':<22} {'':<32} {len(self.rows) - len(self.errors):>8} "
                     f"{sum(r.tokens for r in self.rows):>9} {self.total_usd:>12.9f}")
        if self.errors:
            lines.append(f"{len(self.errors)} request(s) failed (not charged)")
        return "\n".join(lines)


def spend_of(records: Iterable[Any], scope: str | None = None) -> float:
    """Sum of settled ledger records, in total or for ``kind:value`` (see ReplayReport.spend)."""
    if scope is None:
        return sum(r.amount_usd for r in records)
    kind, sep, value = scope.partition(":")
    if not sep:
        raise ReplayError(f"scope {scope!r}: expected kind:value, e.g. provider:deepseek or model:gpt-4o")
    from litellm_payg.plugins import builtin_scopes

    scopes = builtin_scopes()  # the registered scope kinds (``payg_register_scopes``)
    try:  # a budget scope kind, or the split arm a decision recorded
        attr = "split_arm" if kind == "split_arm" else scopes.record_attr_of(kind)
    except ValueError:
        raise ReplayError(f"scope {scope!r}: unknown kind {kind!r}; expected one of "
                          f"{', '.join(scopes.names)}, api_key or split_arm") from None
    total = 0.0
    for r in records:
        got = r.attrs.get(attr)
        if got == value or (isinstance(got, (list, tuple)) and value in got):
            total += r.amount_usd
    return total


# -- replaying -----------------------------------------------------------------------------------


def _player(first: Sequence[int], match_on: Sequence[str] = STRICT_MATCH_ON) -> Any:
    """A vcrpy VCR that plays a cassette with the interactions ``first`` tried first, in order,
    matching on ``match_on`` (strict by default: see :mod:`litellm_payg.tools.cassette_match`)."""
    try:
        import vcr
    except ImportError:
        raise ReplayError("replay needs vcrpy: pip install 'litellm-payg[test]' (or vcrpy>=6)") from None
    from vcr.serialize import deserialize
    from vcr.serializers import yamlserializer

    class FirstOwn:
        @staticmethod
        def load_cassette(cassette_path: Any, serializer: Any) -> Any:
            data = yaml.safe_load(Path(cassette_path).read_text(encoding="utf-8"))
            for it in data["interactions"]:
                for kind in ("request", "response"):
                    part = it[kind]
                    parsed = part.pop("parsed_body", None)
                    if parsed is not None:
                        text = json.dumps(parsed)
                        part["body"] = {"string": text} if kind == "response" else text
                    part.setdefault("body", {"string": ""} if kind == "response" else None)
            order = [*first, *(j for j in range(len(data["interactions"])) if j not in first)]
            data["interactions"] = [data["interactions"][j] for j in order]
            requests, responses = deserialize(yaml.safe_dump(data), yamlserializer)
            tag_origin(requests, lambda k: f"{Path(cassette_path).name}#{order[k]}")
            return requests, responses

        @staticmethod
        def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
            raise ReplayError("replay never records")

    player = register(vcr.VCR(record_mode="none", match_on=tuple(match_on)))
    player.register_persister(FirstOwn)
    return player


def _match_on(match_on: str | Sequence[str] | None) -> tuple[str, ...]:
    try:
        return resolve_match_on(match_on)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


async def _wait_settled(engine: Any, before: int, succeeded: bool, timeout: float = 10.0) -> list[Any]:
    """LiteLLM runs the success/failure callbacks (which settle) on its background worker."""
    from litellm_payg.runtime import store_access

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = store_access.records(engine)[before:]
        if store_access.all_settled(engine) and (records or not succeeded):
            return records
        await asyncio.sleep(0.01)
    return store_access.records(engine)[before:]


async def _send(router: Any, req: RecordedRequest, group: str) -> Any:
    import litellm

    kwargs: dict[str, Any] = {"model": group, "messages": req.messages}
    if req.max_tokens:
        kwargs["max_tokens"] = req.max_tokens
    if req.user:
        kwargs["user"] = req.user
    kwargs.update(req.params)
    if not req.stream:
        return await router.acompletion(**kwargs)
    stream = await router.acompletion(stream=True, stream_options={"include_usage": True}, **kwargs)
    chunks = [c async for c in stream]
    return litellm.stream_chunk_builder(chunks, messages=req.messages)


def _failure(exc: BaseException) -> str:
    """The row's error: for a request no recording matches, a first line saying so with the closest
    recording and the field that differs (vcrpy's message, which LiteLLM wraps, follows in full).
    The field's line is the strict matcher's own message, whatever vcrpy release frames it."""
    text = f"{type(exc).__name__}: {exc}"
    if "Can't play back this request" not in text and "Can't overwrite existing cassette" not in text:
        return text
    closest = next((m.group(0) for ln in text.splitlines() if (m := _MISMATCH.search(ln))), None)
    first = "no recording in the cassette matches this request"
    return (f"{first}; the closest differs in {closest}" if closest else first) + "\n\n" + text


#: the strict matchers' message: ``field.path: sent X, recorded Y (recording file.yaml#N)``
_MISMATCH = re.compile(r"\S+: sent .*, recorded .*$")


def _policy_of(policy: Any) -> Any:
    from litellm_payg.policy.load import Policy, load_policy

    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    return dataclasses.replace(loaded, ledger="memory://")  # a replay never charges a real ledger


async def areplay(
    policy: Any,
    cassettes: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    config: Any,
    group: str | None = None,
    match_on: str | Sequence[str] | None = None,
) -> ReplayReport:
    """Replay every recorded chat request in ``cassettes`` through a Router built from ``config``
    (a LiteLLM config.yaml path, a parsed config or a model_list) governed by ``policy`` (a path,
    dict or Policy; its ledger is replaced by ``memory://``). ``match_on``: ``"strict"`` (default),
    ``"endpoint"`` or vcrpy matcher names; see the module docstring."""
    from litellm import Router

    from litellm_payg.adapter.routing import attach
    from litellm_payg.runtime import store_access

    paths = [cassettes] if isinstance(cassettes, (str, os.PathLike)) else list(cassettes)
    matchers = _match_on(match_on)
    requests = load_requests(paths)
    model_list = load_model_list(config)
    routed = [(req, _group_for(req, model_list, group)) for req in requests]  # fail before any call
    loaded = _policy_of(policy)
    router = Router(model_list=model_list, num_retries=0)
    engine = attach(router, loaded)
    deployment_model = {str(d["model_info"]["id"]): str(d["litellm_params"]["model"]) for d in model_list}
    report = ReplayReport(policy=loaded.source)
    try:
        for req, grp in routed:
            row = ReplayRow(str(req.cassette), req.index, grp, req.model, user=req.user)
            before = len(store_access.records(engine))
            try:
                with _player(req.recordings, matchers).use_cassette(str(req.cassette), allow_playback_repeats=True) as cas:
                    response = await _send(router, req, grp)
                    own = [req.recorded_models[k] for k in range(len(req.recordings)) if cas.play_counts[k]]
                usage = getattr(response, "usage", None)
                row.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                row.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                row.deployment = (getattr(response, "_hidden_params", None) or {}).get("model_id")
            except Exception as exc:  # a failed request is reported (and, by the plugin, not charged)
                row.error = _failure(exc)
                own = []
            records = await _wait_settled(engine, before, succeeded=row.error is None)
            for rec in records:
                row.cost_usd += rec.amount_usd
                row.deployment = row.deployment or rec.attrs.get("deployment")
                row.provider = rec.attrs.get("provider")
                row.split_arm = rec.attrs.get("split_arm")
                row.user = rec.attrs.get("user") or row.user
            if row.deployment is not None:
                row.model = deployment_model.get(str(row.deployment))
                bare = (row.model or "").split("/", 1)[-1]
                row.exact = any(m in (row.model, bare) for m in own)
            report.rows.append(row)
        report.records = store_access.records(engine)
    finally:
        engine.detach()
    return report


def replay(policy: Any, cassettes: Any, *, config: Any, group: str | None = None,
           match_on: str | Sequence[str] | None = None) -> ReplayReport:
    """Synchronous :func:`areplay` (runs it on a private event loop thread if one is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(areplay(policy, cassettes, config=config, group=group, match_on=match_on))
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["ok"] = asyncio.run(areplay(policy, cassettes, config=config, group=group, match_on=match_on))
        except BaseException as exc:  # re-raised in the caller's thread
            result["err"] = exc

    t = threading.Thread(target=work, name="payg-replay")
    t.start()
    t.join()
    if "err" in result:
        raise result["err"]
    return result["ok"]


# -- the CLI command -----------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on ``litellm-payg``'s sub-command parsers."""
    p = subparsers.add_parser("replay", help="replay recorded traffic (vcrpy cassettes) through a policy, offline")
    p.add_argument("policy", metavar="POLICY")
    p.add_argument("cassettes", nargs="+", metavar="CASSETTES", help="cassette files or directories")
    p.add_argument("--config", required=True, help="the LiteLLM config.yaml whose model_list gives the deployments")
    p.add_argument("--group", help="send every recorded request to this model group")
    p.add_argument("--match-on", default="strict", metavar="MODE",
                   help="which recording may answer a request: 'strict' (default: the same model, messages, "
                        "max_tokens, stream and sampling/tool parameters), 'endpoint' (any recording of the "
                        "chosen provider endpoint: an approximation you opt into) or comma-separated vcrpy "
                        "matcher names")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: never fetch the price map
    report = replay(args.policy, args.cassettes, config=args.config, group=args.group,
                    match_on=getattr(args, "match_on", None))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.table())
    return 0
