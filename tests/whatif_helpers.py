"""LiteLLM's spend-logs table in a throw-away Postgres database, for ``what-if`` tests and its bench.

The table is created from the installed LiteLLM's own ``schema.prisma`` (``model LiteLLM_SpendLogs``),
so a LiteLLM release that renames or drops a column the reader selects fails the tests, and rows are
loaded with ``COPY`` (a million in seconds).
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

ADMIN_URL = os.environ.get("PAYG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLE = "LiteLLM_SpendLogs"


def schema_prisma() -> Path:
    import litellm

    return Path(litellm.__file__).parent / "proxy" / "schema.prisma"


def prisma_columns(text: str | None = None) -> list[tuple[str, str, bool, str]]:
    """(column, prisma type, nullable, attributes) of ``model LiteLLM_SpendLogs { ... }``."""
    text = schema_prisma().read_text(encoding="utf-8") if text is None else text
    m = re.search(r"^model LiteLLM_SpendLogs \{(.*?)^\}", text, re.S | re.M)
    if m is None:
        raise AssertionError(f"{schema_prisma()}: no 'model LiteLLM_SpendLogs' block")
    out = []
    for line in m.group(1).splitlines():
        line = line.split("//", 1)[0].strip()
        if not line or line.startswith("@@"):
            continue
        name, type_, *rest = line.split()
        attrs = " ".join(rest)
        mapped = re.search(r'@map\("([^"]+)"\)', attrs)
        out.append((mapped.group(1) if mapped else name, type_.rstrip("?"), type_.endswith("?"), attrs))
    return out


_PG = {"String": "TEXT", "Int": "INTEGER", "Float": "DOUBLE PRECISION", "DateTime": "TIMESTAMP(3)", "Json": "JSONB",
       "Boolean": "BOOLEAN", "BigInt": "BIGINT"}


def spend_logs_ddl() -> str:
    """``CREATE TABLE "LiteLLM_SpendLogs"`` as Prisma would migrate it (types, nullability, defaults)."""
    cols = []
    for name, type_, nullable, attrs in prisma_columns():
        sql = f'"{name}" {_PG[type_]}'
        d = re.search(r"@default\s*\((.*?)\)(?:\s|$)", attrs)
        if d:
            value = d.group(1).strip()
            if value == "now(":
                value = "now()"
            if value.startswith("now"):
                sql += " DEFAULT CURRENT_TIMESTAMP"
            elif value.startswith('"'):
                literal = json.loads(value)
                sql += f" DEFAULT '{literal}'" + ("::jsonb" if type_ == "Json" else "")
            else:
                sql += f" DEFAULT {value}"
        if "@id" in attrs:
            sql += " PRIMARY KEY"
        elif not nullable:
            sql += " NOT NULL"
        cols.append(sql)
    return f'CREATE TABLE "{TABLE}" (\n  ' + ",\n  ".join(cols) + "\n);\n" + \
        f'CREATE INDEX ON "{TABLE}" ("startTime");'


def require_postgres() -> None:
    try:
        import psycopg

        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure to reach Postgres means "no Postgres here"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but Postgres at {ADMIN_URL} is unreachable: {exc}")
        pytest.skip(f"no Postgres at {ADMIN_URL} ({exc}); CI runs these tests")


@contextmanager
def throwaway_database(create_table: bool = True) -> Iterator[str]:
    """A fresh database (with the spend-logs table), dropped afterwards; yields its URL."""
    import psycopg

    name = f"payg_whatif_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        if create_table:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(spend_logs_ddl())
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: a spend-log row as a dict of the columns the tests fill; the others keep their defaults
COPY_COLUMNS = ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
                "startTime", "endTime", "model", "model_id", "model_group", "custom_llm_provider", "user", "metadata",
                "request_tags", "team_id", "organization_id", "end_user", "session_id", "status")


def copy_rows(url: str, rows: Iterable[dict]) -> int:
    """Load rows with COPY (fast: a million rows in seconds)."""
    import psycopg

    n = 0
    cols = ", ".join(f'"{c}"' for c in COPY_COLUMNS)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f'COPY "{TABLE}" ({cols}) FROM STDIN') as copy:
            for r in rows:
                copy.write_row(tuple(r.get(c) for c in COPY_COLUMNS))
                n += 1
        conn.commit()
    return n


def spend_row(request_id: str, ts: float, group: str, model: str, prompt: int | None, completion: int | None,
              spend: float, *, provider: str = "", model_id: str = "", team: str | None = None, key: str = "",
              user: str = "", session: str | None = None, tags: tuple[str, ...] = (), cache_read: int = 0,
              cache_write: int = 0, status: str = "success") -> dict:
    """One ``LiteLLM_SpendLogs`` row as LiteLLM's proxy writes it (usage object in metadata)."""
    start = datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)
    usage = None
    if prompt is not None:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + (completion or 0),
                 "prompt_tokens_details": {"cached_tokens": cache_read}, "cache_read_input_tokens": cache_read,
                 "cache_creation_input_tokens": cache_write}
    return {
        "request_id": request_id, "call_type": "acompletion", "api_key": key, "spend": spend,
        "total_tokens": (prompt or 0) + (completion or 0), "prompt_tokens": prompt or 0, "completion_tokens": completion or 0,
        "startTime": start, "endTime": start, "model": model, "model_id": model_id, "model_group": group,
        "custom_llm_provider": provider, "user": user, "metadata": json.dumps({"usage_object": usage} if usage else {}),
        "request_tags": json.dumps(list(tags)), "team_id": team, "organization_id": None, "end_user": None,
        "session_id": session, "status": status,
    }


#: (group, model as LiteLLM logs it, provider) of the generated month
MONTH_MODELS = (("support", "deepseek-chat", "deepseek"), ("support", "gpt-4o-mini", "openai"),
                ("support", "mistral-large-latest", "mistral"), ("chat", "deepseek-chat", "deepseek"),
                ("chat", "mistral-large-latest", "mistral"))
MONTH_START = datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp()


def generate_month(n: int, seed: int = 7, start: float = MONTH_START, days: int = 30) -> Iterator[dict]:
    """``n`` spend-log rows spread over ``days`` days, in time order: two groups, five deployments,
    a few teams and keys, tags, sessions, cache reads on some; the spend is LiteLLM's price."""
    import litellm

    rng = random.Random(seed)
    step = days * 86400 / n
    prices = {}
    for _, model, provider in MONTH_MODELS:
        ref = f"{provider}/{model}" if provider != "openai" else model
        mc = litellm.model_cost.get(ref) or litellm.model_cost[model]
        prices[model] = (mc["input_cost_per_token"], mc["output_cost_per_token"],
                         mc.get("cache_read_input_token_cost", mc["input_cost_per_token"]))
    teams = ("t-support", "t-sales", "t-research")
    for i in range(n):
        group, model, provider = MONTH_MODELS[rng.randrange(len(MONTH_MODELS))]
        prompt = rng.choice((rng.randint(50, 500), rng.randint(500, 4000)))
        completion = rng.randint(10, 600)
        read = rng.choice((0, 0, 0, prompt // 2))
        pin, pout, pread = prices[model]
        spend = (prompt - read) * pin + read * pread + completion * pout
        team = teams[i % 3]
        yield spend_row(f"req-{i:08d}", start + (i + 0.5) * step, group, model, prompt, completion, spend,
                        provider=provider, model_id=f"{group}-{model}", team=team, key=f"key-{team}-{i % 2}",
                        user=f"user-{i % 17}", session=f"s-{i // 20}" if i % 5 == 0 else None,
                        tags=("faq",) if i % 4 == 0 else (), cache_read=read)
