"""LiteLLM's spend logs (``LiteLLM_SpendLogs`` in the proxy's Postgres) as what-if history.

Read with psycopg 3 (the ``whatif`` extra) through a server-side cursor (planned for its first rows),
``ITERSIZE`` rows a ``FETCH`` (each streamed as one result where libpq is 17 or later), in
``startTime`` order, so memory does not grow with the table. In binary: the same values
(text, integers, float8 bit for bit), without Postgres formatting each one as text and psycopg
parsing it back. The filters
(``--since/--until``, team, key, model group, tag) are a ``WHERE`` clause, run by Postgres.

What a row is priced from: ``prompt_tokens``, ``completion_tokens`` and, in ``metadata.usage_object``
(LiteLLM's ``Usage`` as logged), the cache reads (``cache_read_input_tokens`` or
``prompt_tokens_details.cached_tokens``), cache writes (``cache_creation_input_tokens``) and
reasoning tokens (``completion_tokens_details.reasoning_tokens``). A row whose status is not
``success`` is passed over (failover does not apply to answers that succeeded; a failure was not
an answer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from litellm_payg.tools.whatif_history import Filters, HistoryRow, WhatIfInputError

TABLE = "LiteLLM_SpendLogs"
#: the columns of LiteLLM's ``schema.prisma`` this reader selects (a test checks them against it)
COLUMNS = ("request_id", "startTime", "model", "model_id", "model_group", "custom_llm_provider", "prompt_tokens",
           "completion_tokens", "spend", "user", "team_id", "api_key", "organization_id", "end_user", "session_id",
           "request_tags", "metadata", "status")
ITERSIZE = 10_000
#: batches of ``ITERSIZE`` rows read ahead of the replay, on a thread (``prefetched``)
AHEAD = 2


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


def is_postgres_url(source: str) -> bool:
    return source.split("://", 1)[0] in ("postgresql", "postgres")


def connect(url: str) -> Any:
    """A psycopg connection, or a :class:`WhatIfInputError` saying why there is none."""
    try:
        import psycopg
    except ImportError:
        raise WhatIfInputError(
            "reading LiteLLM's spend logs needs psycopg 3: pip install 'litellm-payg[whatif]' (or 'psycopg[binary]')"
        ) from None
    parts = urlsplit(url)
    if not parts.hostname and not parts.path.strip("/"):
        raise WhatIfInputError(f"{redact(url)}: not a Postgres URL (expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
    try:
        return psycopg.connect(url, connect_timeout=5, autocommit=False)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WhatIfInputError(f"cannot connect to {redact(url)}: {reason}") from None
    except ValueError as exc:  # psycopg's own URL parsing
        raise WhatIfInputError(f"{redact(url)}: not a Postgres URL ({exc})") from None


def check_table(conn: Any, url: str) -> None:
    """The spend-logs table exists and has every column this reader selects."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = current_schema()",
        (TABLE,)).fetchall()
    if not rows:
        raise WhatIfInputError(f"{redact(url)}: no table \"{TABLE}\" (is this the LiteLLM proxy's DATABASE_URL, "
                               "with spend logs enabled?)")
    have = {r[0] for r in rows}
    missing = [c for c in COLUMNS if c not in have]
    if missing:
        raise WhatIfInputError(f"{redact(url)}: table \"{TABLE}\" has no column(s) {', '.join(missing)}; "
                               "a LiteLLM release with a different spend-log schema?")


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses, params = ["(status IS NULL OR status = 'success')"], []
    if filters.since is not None:
        clauses.append('"startTime" >= to_timestamp(%s)')
        params.append(filters.since)
    if filters.until is not None:
        clauses.append('"startTime" < to_timestamp(%s)')
        params.append(filters.until)
    for column, value in (("team_id", filters.team), ("api_key", filters.key), ("model_group", filters.group)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if filters.tag is not None:
        clauses.append("request_tags @> %s::jsonb")
        params.append(json.dumps([filters.tag]))
    return " AND ".join(clauses), params


_USAGE_INT = ("CASE WHEN jsonb_typeof(metadata -> 'usage_object') = 'object' THEN "
              "(substring(metadata -> 'usage_object' {0} from '^[0-9]+'))::bigint END")


#: ``model_string(model, custom_llm_provider)``, in SQL
_MODEL_STRING = ("CASE WHEN COALESCE(custom_llm_provider, '') = '' OR custom_llm_provider = 'openai' "
                 "OR starts_with(COALESCE(model, ''), custom_llm_provider || '/') THEN COALESCE(model, '') "
                 "ELSE custom_llm_provider || '/' || COALESCE(model, '') END")


def _select(filters: Filters) -> tuple[str, list[Any]]:
    """The query whose rows are ``HistoryRow`` s' fields in order (then the tags' text): Postgres
    works out the model string, the group, the cache and reasoning splits and the empty-means-none
    of each text (``NULLIF``), so a row is made here without a step per field (it runs on the
    read-ahead thread, holding the interpreter the replay needs). Each expression is what
    ``row_from_spend_log`` did in Python before; ``tests/test_whatif.py`` checks the edge cases."""
    where, params = _where(filters)
    sql = (
        'SELECT request_id, extract(epoch FROM "startTime")::float8, '
        f"COALESCE(NULLIF(model_group, ''), {_MODEL_STRING}), {_MODEL_STRING}, NULLIF(model_id, ''), "
        "prompt_tokens, completion_tokens, "
        # the cache and reasoning splits, pulled out of the logged usage object by Postgres (no JSON
        # parsing per row here); the leading digits: a count logged as 12.0 reads as 12. The reads
        # are cache_read_input_tokens, else prompt_tokens_details.cached_tokens, else 0
        "COALESCE(NULLIF(" + _USAGE_INT.format("->> 'cache_read_input_tokens'") + ", 0), NULLIF("
        + _USAGE_INT.format("-> 'prompt_tokens_details' ->> 'cached_tokens'") + ", 0), 0), "
        "COALESCE(" + _USAGE_INT.format("->> 'cache_creation_input_tokens'") + ", 0), "
        "COALESCE(" + _USAGE_INT.format("-> 'completion_tokens_details' ->> 'reasoning_tokens'") + ", 0), "
        # spend: 0 for none (and for -0.0, as Python's ``spend or 0.0`` read it)
        "COALESCE(NULLIF(spend, 0), 0)::float8, "
        "NULLIF(\"user\", ''), NULLIF(team_id, ''), NULLIF(api_key, ''), NULLIF(organization_id, ''), "
        "NULLIF(end_user, ''), NULLIF(session_id, ''), request_tags::text "
        f'FROM "{TABLE}" WHERE {where} ORDER BY "startTime", request_id'
    )
    return sql, params


def read_spend_logs(url: str, filters: Filters = Filters(), itersize: int = ITERSIZE,
                    ahead: int = AHEAD) -> Iterator[HistoryRow]:
    """Every successful request of the spend logs that the filters keep, in time order, streamed.

    The rows are read on a thread of their own, at most ``ahead`` batches of ``itersize`` ahead of
    the caller (``prefetched``): most of a read is waiting for Postgres (the sort, the usage object's
    fields, the transfer), which the replay's own work then overlaps. ``ahead=0``: read on the
    caller's thread."""
    rows = _read_spend_logs(url, filters, itersize)
    return prefetched(rows, itersize, ahead) if ahead > 0 else rows


def _read_spend_logs(url: str, filters: Filters, itersize: int) -> Iterator[HistoryRow]:
    import psycopg

    conn = connect(url)
    try:
        check_table(conn, url)
        sql, params = _select(filters)
        if _streams_in_chunks():
            # a server-side cursor (so Postgres plans for the first rows: the startTime index, where a
            # plain query on a table without statistics sorts all of it before the first row), each
            # FETCH of ``itersize`` rows streamed as one result (libpq's chunked rows): psycopg decodes
            # them as they are read, with less work per row than its cursor's fetchmany (a million
            # freshly loaded rows: 2.1 s of CPU against 2.5 s). Not one FETCH ALL: Postgres stores a
            # FETCH's whole result before sending its first row (3 s for a million)
            try:
                conn.execute(f"DECLARE {_CURSOR} NO SCROLL CURSOR FOR {sql}", params)
            except psycopg.Error as exc:
                raise WhatIfInputError(f"{redact(url)}: cannot read \"{TABLE}\": {str(exc).strip().splitlines()[0]}") from None
            cur = conn.cursor(binary=True)
            fetch = f"FETCH FORWARD {int(itersize)} FROM {_CURSOR}"
            while True:
                n = 0
                for r in cur.stream(fetch, size=itersize):
                    n += 1
                    yield row_from_spend_log(r)
                if n < itersize:
                    return
        with conn.cursor(name=_CURSOR, binary=True) as cur:
            cur.itersize = itersize
            try:
                cur.execute(sql, params)
            except psycopg.Error as exc:
                raise WhatIfInputError(f"{redact(url)}: cannot read \"{TABLE}\": {str(exc).strip().splitlines()[0]}") from None
            for r in cur:
                yield row_from_spend_log(r)
    finally:
        conn.close()


_CURSOR = "litellm_payg_whatif"


def _streams_in_chunks() -> bool:
    """Whether psycopg can stream a query's rows many to a result (psycopg 3.2 with libpq 17 or later);
    else a server-side cursor reads them ``ITERSIZE`` at a time."""
    try:
        from psycopg import capabilities
    except ImportError:  # psycopg before 3.2
        return False
    return bool(capabilities.has_stream_chunked())


def prefetched(rows: Iterator[HistoryRow], batch: int, ahead: int) -> Iterator[HistoryRow]:
    """``rows``, produced on a daemon thread in batches of ``batch``, at most ``ahead`` batches
    ahead (so memory holds at most ``(ahead + 2) * batch`` rows whatever the table's size). An error
    of the producer is raised here, where the rows are read; stopping early (closing this
    generator) stops the producer and closes its connection."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            chunk: list[HistoryRow] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= batch:
                    if not _put(q, chunk, stop):
                        return
                    chunk = []
            if chunk and not _put(q, chunk, stop):
                return
            _put(q, done, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            _put(q, exc, stop)
        finally:
            rows.close()  # type: ignore[attr-defined]

    worker = threading.Thread(target=produce, name="litellm-payg-whatif-read", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        stop.set()
        worker.join(timeout=5)


def _put(q: Any, item: Any, stop: Any) -> bool:
    """Put ``item`` on ``q``, waiting while it is full; False when the reader stopped."""
    import queue

    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def deployments_in(url: str, filters: Filters = Filters()) -> list[tuple[str, str, str | None]]:
    """(model group, model, deployment id) of every deployment the filtered history used."""
    conn = connect(url)
    try:
        check_table(conn, url)
        where, params = _where(filters)
        rows = conn.execute(
            f'SELECT DISTINCT model_group, model, custom_llm_provider, model_id FROM "{TABLE}" WHERE {where}', params
        ).fetchall()
    finally:
        conn.close()
    return [(g or m, model_string(m, p), d or None) for g, m, p, d in rows]


def model_string(model: str | None, provider: str | None) -> str:
    """The LiteLLM model string a spend log's ``model`` and ``custom_llm_provider`` name."""
    model = model or ""
    if not provider or model.startswith(provider + "/") or provider == "openai":
        return model
    return f"{provider}/{model}"


def row_from_spend_log(r: tuple) -> HistoryRow:
    """A row of ``_select``'s query: the row's fields, then its tags' text."""
    tags = _TAGS.get(r[17])
    if tags is None:
        tags = _tags(r[17])
    return HistoryRow(*r[:17], tags)


#: what a spend log's ``request_tags`` text reads as, remembered (a million rows repeat a few); at
#: most ``_REMEMBERED``, then forgotten
_REMEMBERED = 10_000
_TAGS: dict[str | None, tuple[str, ...]] = {None: (), "": (), "[]": ()}


def _tags(tags_text: str) -> tuple[str, ...]:
    try:
        tags = json.loads(tags_text)
    except ValueError:
        tags = []
    out = tuple(str(t) for t in tags) if isinstance(tags, list) else ()
    if len(_TAGS) >= _REMEMBERED:
        _TAGS.clear()
        _TAGS.update({None: (), "": (), "[]": ()})
    _TAGS[tags_text] = out
    return out
