"""Entry codes: issue, verify, and every way a gate must refuse one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.entry_codes import EntryCodeError, UsedCodes, issue, load_secret, parse

SECRET = b"s3cret-s3cret-s3cret"
NOW = 1_767_261_600.0


def test_valid_code_round_trips():
    code = issue(SECRET, "st1", "acct-9", NOW, party_size=3, ttl_s=30)
    c = parse(SECRET, code, "st1", NOW + 10)
    assert (c.store, c.account, c.party_size) == ("st1", "acct-9", 3)
    assert c.expires_at - c.issued_at == pytest.approx(30)


@pytest.mark.parametrize("mutate, now, reason", [
    (lambda c: c, NOW + 61, "expired"),
    (lambda c: c, NOW - 60, "not_yet_valid"),
    (lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"), NOW, "forged"),
    (lambda c: c.replace("WO1.", "WO2."), NOW, "malformed"),
    (lambda c: "hello", NOW, "malformed"),
    (lambda c: c + ".x", NOW, "malformed"),
    (lambda c: "WO1." + "A" * 2000, NOW, "malformed"),
])
def test_bad_codes_are_refused_with_a_reason(mutate, now, reason):
    code = mutate(issue(SECRET, "st1", "acct-1", NOW))
    with pytest.raises(EntryCodeError) as err:
        parse(SECRET, code, "st1", now)
    assert err.value.reason == reason


def test_other_secret_is_forged_and_other_store_is_refused():
    code = issue(b"another-secret-0123", "st1", "a", NOW)
    with pytest.raises(EntryCodeError, match="forged"):
        parse(SECRET, code, "st1", NOW)
    with pytest.raises(EntryCodeError, match="wrong_store"):
        parse(SECRET, issue(SECRET, "st2", "a", NOW), "st1", NOW)


def test_code_is_single_use_also_after_a_restart(tmp_path):
    code = parse(SECRET, issue(SECRET, "st1", "a", NOW), "st1", NOW)
    used = UsedCodes(tmp_path / "used.sqlite")
    used.use(code, NOW)
    used.close()
    again = UsedCodes(tmp_path / "used.sqlite")
    with pytest.raises(EntryCodeError, match="replayed"):
        again.use(code, NOW + 1)
    again.use(code, NOW + 200)  # long expired: forgotten, but parse() refuses it as expired anyway
    assert len(again) == 1


def test_ttl_is_capped_and_secret_must_be_long():
    with pytest.raises(ValueError):
        issue(SECRET, "st1", "a", NOW, ttl_s=61)
    with pytest.raises(ValueError, match="shorter than 16"):
        load_secret("WALKOUT_X", environ={"WALKOUT_X": "short"})
    assert load_secret("WALKOUT_X", environ={"WALKOUT_X": "x" * 16}) == b"x" * 16


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_string_is_refused_cleanly(text):
    with pytest.raises(EntryCodeError):
        parse(SECRET, text, "st1", NOW)
