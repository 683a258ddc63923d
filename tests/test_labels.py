"""Client labels are bounded (issue #19 item 5): ``user``, end user, tags, session and trace ids are
kept as sent up to ``MAX_LABEL_CHARS``, and past it as a prefix plus a hash of the whole, so a 1 MB
``user`` makes neither a 1 MB bucket key nor a 1 MB ledger record, and two long labels stay apart."""

from __future__ import annotations

import pytest

from litellm_payg.core.identity import MAX_LABEL_CHARS, MAX_TAGS, LabelError, bounded_label, key_hash
from litellm_payg.wire.identity import identity_from_key, identity_of, session_of


class Key:
    user_id, team_id, end_user_id = "u" * 10_000, "t", None
    token = "sk-" + "k" * 10_000


def test_a_label_up_to_the_limit_is_kept_as_sent():
    assert bounded_label("alice") == "alice"
    assert bounded_label("a" * MAX_LABEL_CHARS) == "a" * MAX_LABEL_CHARS


def test_a_longer_label_is_a_prefix_and_a_hash_of_the_whole():
    long_a, long_b = "a" * 10_000, "a" * 9_999 + "b"
    assert len(bounded_label(long_a)) == MAX_LABEL_CHARS
    assert bounded_label(long_a).startswith("a" * 200) and "...sha256:" in bounded_label(long_a)
    assert bounded_label(long_a) != bounded_label(long_b)  # same prefix, different runs/buckets
    assert bounded_label(long_a) == bounded_label("a" * 10_000)  # stable


def test_every_client_label_of_a_request_is_bounded():
    who = identity_from_key(Key(), {"user": "e" * 1_000_000}, {"tags": ["x" * 5_000]})
    assert who.end_user is not None and len(who.end_user) == MAX_LABEL_CHARS
    assert len(who.user) == MAX_LABEL_CHARS and len(who.tags[0]) == MAX_LABEL_CHARS
    # a raw key is hashed whole (LiteLLM's hash of the real key), never its bounded form
    assert who.api_key == key_hash(Key.token) and len(who.api_key) == 64
    assert len(session_of({"litellm_session_id": "s" * 100_000}, {})) == MAX_LABEL_CHARS
    sdk = identity_of({"user": "e" * 1_000}, {"user": "u" * 1_000, "team": "t" * 1_000, "api_key": "k" * 1_000})
    assert {len(sdk.user), len(sdk.team), len(sdk.api_key), len(sdk.end_user)} == {MAX_LABEL_CHARS}


def test_too_many_tags_is_refused_naming_the_field():
    identity_of({}, {"tags": [f"t{i}" for i in range(MAX_TAGS)]})
    with pytest.raises(LabelError, match=f"at most {MAX_TAGS} tags") as info:
        identity_of({}, {"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]})
    assert info.value.field == "metadata.tags"
