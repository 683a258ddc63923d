"""Window and scope math of litellm_payg.core.budgets, driven by a fake clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from litellm_payg.core.budgets import Budget, all_buckets, buckets_for, window_bounds
from litellm_payg.core.decision import Candidate, RouteRequest


def Identity(*, user=None, team=None, api_key=None, end_user=None, tags=(), model_group="g", deployment_id=None,
             model=None, provider=None, trace_id=None):
    """A request sent to a candidate, with just the fields budget scopes read."""
    request = RouteRequest(model_group, 0, 0, user=user, team=team, api_key=api_key, end_user=end_user, tags=tags,
                           trace_id=trace_id)
    candidate = Candidate(deployment_id or "d", model or "m", provider or "p", model_group, None, None)
    return request, candidate

UTC = timezone.utc
NY = "America/New_York"
KOLKATA = "Asia/Kolkata"


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def one(budget: Budget, ident: tuple, now: datetime, tz: str = "UTC"):
    bbs = buckets_for(budget, *ident, now, tz)
    assert len(bbs) == 1, bbs
    return bbs[0]


ALICE = Identity(user="alice", team="t1", api_key="hash123", tags=("prod", "batch"),
                 model_group="gpt-4o", deployment_id="dep-1", model="openai/gpt-4o", provider="openai")


# -- Budget validation ------------------------------------------------------


def test_bad_window_message_names_the_accepted_forms():
    with pytest.raises(ValidationError) as e:
        Budget(scope="global", window="fortnight", limit_usd=5)
    assert "window must be hour, day, week, month, rolling:<N>(s|m|h|d) or session:<N>(s|m|h|d), got 'fortnight'" in str(e.value)


@pytest.mark.parametrize("window", ["rolling:0m", "rolling:5", "rolling:5w", "rolling:-1h", "Month"])
def test_other_bad_windows(window):
    with pytest.raises(ValidationError, match="window must be"):
        Budget(scope="global", window=window, limit_usd=5)


@pytest.mark.parametrize("scope", ["everyone", "user:", "planet:mars", "user", ""])
def test_bad_scopes(scope):
    with pytest.raises(ValidationError, match="scope must be 'global' or <kind>:<value>"):
        Budget(scope=scope, window="day", limit_usd=5)


def test_limit_alert_and_extra_fields_are_validated():
    with pytest.raises(ValidationError):
        Budget(scope="global", window="day", limit_usd=0)
    with pytest.raises(ValidationError, match=r"alert_at values must be fractions in \(0, 1\]"):
        Budget(scope="global", window="day", limit_usd=1, alert_at=[0.5, 1.5])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Budget(scope="global", window="day", limit_usd=1, limt_usd=3)
    with pytest.raises(ValidationError):
        Budget(scope="global", window="day", limit_usd=1, on_exceed="explode")
    b = Budget(scope="global", window="day", limit_usd=1, alert_at=[0.9, 0.5, 0.9])
    assert b.alert_at == [0.5, 0.9]


# -- calendar windows ---------------------------------------------------------


def test_month_rolls_over_at_local_midnight_new_york():
    b = Budget(scope="user:*", window="month", limit_usd=10)
    # 2026-12-01 00:00 in New York (EST, UTC-5) is 05:00 UTC
    before = one(b, ALICE, utc(2026, 12, 1, 4, 59, 59), NY)
    after = one(b, ALICE, utc(2026, 12, 1, 5, 0, 0), NY)
    assert before.bucket.key == "b0|user:alice|month|2026-11"
    assert after.bucket.key == "b0|user:alice|month|2026-12"
    assert before.resets_at == after.window_start
    assert before.resets_at.astimezone(UTC) == utc(2026, 12, 1, 5)
    assert before.window_start.astimezone(UTC) == utc(2026, 11, 1, 4)  # Nov 1 was still EDT
    # the same instant is already December in UTC
    assert one(b, ALICE, utc(2026, 12, 1, 4, 59, 59)).bucket.key.endswith("|month|2026-12")


def test_day_rolls_over_at_local_midnight_kolkata():
    b = Budget(scope="global", window="day", limit_usd=10)
    # IST is UTC+05:30: local midnight of Mar 11 is Mar 10 18:30 UTC
    before = one(b, ALICE, utc(2026, 3, 10, 18, 29, 59, 999999), KOLKATA)
    after = one(b, ALICE, utc(2026, 3, 10, 18, 30), KOLKATA)
    assert before.bucket.key == "b0|global|day|2026-03-10"
    assert after.bucket.key == "b0|global|day|2026-03-11"
    assert before.resets_at.astimezone(UTC) == utc(2026, 3, 10, 18, 30)


def test_hour_windows_start_at_local_hours_in_kolkata():
    start, end, label = window_bounds("hour", utc(2026, 3, 10, 10, 29), KOLKATA)
    assert start.astimezone(UTC) == utc(2026, 3, 10, 9, 30)
    assert end.astimezone(UTC) == utc(2026, 3, 10, 10, 30)
    assert label == "2026-03-10T15+0530"


def test_dst_weeks_and_days_new_york():
    # spring forward on Sun 2026-03-08: that ISO week is one hour short
    start, end, label = window_bounds("week", utc(2026, 3, 5, 12), NY)
    assert label == "2026-W10"
    assert start.weekday() == 0 and start.hour == 0
    assert end - start == timedelta(days=7)  # same wall-clock span...
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=167)  # ...167 real hours
    # fall back on Sun 2026-11-01: that day has 25 hours, its week 169
    d0, d1, dl = window_bounds("day", utc(2026, 11, 1, 12), NY)
    assert dl == "2026-11-01"
    assert d1.astimezone(UTC) - d0.astimezone(UTC) == timedelta(hours=25)
    w0, w1, _ = window_bounds("week", utc(2026, 11, 1, 12), NY)
    assert w1.astimezone(UTC) - w0.astimezone(UTC) == timedelta(hours=169)


def test_repeated_dst_hour_gets_two_buckets():
    b = Budget(scope="global", window="hour", limit_usd=1)
    first = one(b, ALICE, utc(2026, 11, 1, 5, 30), NY)  # 01:30 EDT
    second = one(b, ALICE, utc(2026, 11, 1, 6, 30), NY)  # 01:30 EST
    assert first.bucket.key != second.bucket.key
    assert first.resets_at.astimezone(UTC) == utc(2026, 11, 1, 6)
    assert second.resets_at.astimezone(UTC) == utc(2026, 11, 1, 7)


def test_iso_week_label_across_new_year():
    # Fri 2027-01-01 belongs to ISO week 53 of 2026, which started Mon 2026-12-28
    start, end, label = window_bounds("week", utc(2027, 1, 1, 12), "UTC")
    assert label == "2026-W53"
    assert start == datetime(2026, 12, 28, tzinfo=ZoneInfo("UTC"))


def test_rolling_window_key_is_stable_and_has_no_reset():
    b = Budget(scope="team:*", window="rolling:30m", limit_usd=3, name="burst")
    a = one(b, ALICE, utc(2026, 1, 1))
    z = one(b, ALICE, utc(2026, 6, 1, 13, 7))
    assert a.bucket.key == z.bucket.key == "burst|team:t1|rolling:30m"
    assert a.bucket.rolling_s == 1800 and a.resets_at is None and a.bucket.expires_at is None
    assert one(Budget(scope="global", window="rolling:2d", limit_usd=1), ALICE, utc(2026, 1, 1)).bucket.rolling_s == 172800


def test_calendar_bucket_expiry_and_enforcement_flags():
    now = utc(2026, 2, 10)
    blk = one(Budget(scope="global", window="month", limit_usd=7), ALICE, now)
    assert blk.bucket.enforce and blk.bucket.limit_usd == 7
    assert blk.bucket.expires_at == utc(2026, 3, 1).timestamp() + 35 * 86400
    alert = one(Budget(scope="global", window="month", limit_usd=7, on_exceed="alert"), ALICE, now)
    assert not alert.bucket.enforce


def test_naive_clock_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        buckets_for(Budget(scope="global", window="day", limit_usd=1), *ALICE, datetime(2026, 1, 1))


def test_unknown_timezone_is_refused():
    with pytest.raises(ValueError, match="unknown IANA time zone 'Mars/Olympus'"):
        buckets_for(Budget(scope="global", window="day", limit_usd=1), *ALICE, utc(2026, 1, 1), "Mars/Olympus")


# -- scopes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope, expected",
    [
        ("global", ["global"]),
        ("provider:openai", ["provider:openai"]),
        ("provider:anthropic", []),
        ("provider:*", ["provider:openai"]),
        ("model:openai/gpt-4o", ["model:openai/gpt-4o"]),
        ("group:gpt-4o", ["group:gpt-4o"]),
        ("deployment:dep-1", ["deployment:dep-1"]),
        ("deployment:dep-2", []),
        ("user:alice", ["user:alice"]),
        ("user:bob", []),
        ("user:*", ["user:alice"]),
        ("team:*", ["team:t1"]),
        ("key:hash123", ["key:hash123"]),
        ("tag:prod", ["tag:prod"]),
        ("tag:dev", []),
        ("tag:*", ["tag:prod", "tag:batch"]),
    ],
)
def test_scope_matching(scope, expected):
    bbs = buckets_for(Budget(scope=scope, window="day", limit_usd=1), *ALICE, utc(2026, 5, 5))
    assert [bb.bucket.key.split("|")[1] for bb in bbs] == expected


def test_request_without_user_is_not_under_user_star():
    anon = Identity(model_group="gpt-4o", provider="openai")
    assert buckets_for(Budget(scope="user:*", window="day", limit_usd=1), *anon, utc(2026, 5, 5)) == []
    assert buckets_for(Budget(scope="tag:*", window="day", limit_usd=1), *anon, utc(2026, 5, 5)) == []
    assert len(buckets_for(Budget(scope="global", window="day", limit_usd=1), *anon, utc(2026, 5, 5))) == 1


def test_model_strings_with_colons_and_ids_with_separators():
    ident = Identity(model="bedrock/anthropic.claude-3:0", user="evil|user:x")
    bb = one(Budget(scope="model:bedrock/anthropic.claude-3:0", window="day", limit_usd=1), ident, utc(2026, 5, 5))
    assert bb.bucket.key == "b0|model:bedrock/anthropic.claude-3:0|day|2026-05-05"
    bb = one(Budget(scope="user:*", window="day", limit_usd=1), ident, utc(2026, 5, 5))
    assert bb.bucket.key == "b0|user:evil%7Cuser:x|day|2026-05-05"
    assert bb.scope_value == "evil|user:x"


def test_all_buckets_uses_positions_and_rejects_shared_counters():
    budgets = [Budget(scope="global", window="day", limit_usd=1),
               Budget(scope="user:*", window="month", limit_usd=5, on_exceed="alert")]
    keys = [bb.bucket.key for bb in all_buckets(budgets, *ALICE, utc(2026, 5, 5))]
    assert keys == ["b0|global|day|2026-05-05", "b1|user:alice|month|2026-05"]
    dup = [Budget(scope="global", window="day", limit_usd=1, name="x"),
           Budget(scope="global", window="day", limit_usd=2, name="x")]
    with pytest.raises(ValueError, match="same counter"):
        all_buckets(dup, *ALICE, utc(2026, 5, 5))
