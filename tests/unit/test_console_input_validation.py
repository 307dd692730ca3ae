"""The console checks every query and form field before it reads Redis (kubeworkers.console.forms):
a bad one is refused with one line naming the field; a good one means what the CLI's flag means."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeworkers import inspection
from kubeworkers.console import csrf, forms


def test_a_jobs_filter_means_what_jobs_list_with_the_same_flags_means() -> None:
    chosen = forms.jobs_filter({"pool": "p", "state": "failed", "handler": "resize", "since": "1h30m",
                                "limit": "20"})
    assert chosen == forms.JobsFilter(pool="p", state="Failed", handler="resize", since="1h30m", limit=20)
    assert chosen.query() == inspection.Query(state="Failed", handler="resize", since_seconds=5400, limit=20)
    assert chosen.params() == {"pool": "p", "state": "Failed", "handler": "resize", "since": "1h30m", "limit": "20"}


def test_empty_fields_are_not_filters_and_the_pool_may_come_from_the_default() -> None:
    empty = {"state": "", "handler": " ", "since": ""}
    assert forms.jobs_filter(empty, default_pool="demo") == forms.JobsFilter("demo")
    assert forms.jobs_filter({"state": "delayed", "pool": "p"}).state == "Delayed"


@pytest.mark.parametrize(("params", "said"), [
    ({}, "pool is required"),
    ({"pool": "a b"}, "pool must be a pool name"),
    ({"pool": "../x"}, "pool must be a pool name"),
    ({"pool": "x" * 300}, "pool must be a pool name"),
    ({"pool": "p", "state": "Exploded"}, "state must be one of"),
    ({"pool": "p", "since": "yesterday"}, "since must be a duration"),
    ({"pool": "p", "since": "0s"}, "since must be more than zero"),
    ({"pool": "p", "limit": "0"}, "limit must be a whole number from 1 to 1000"),
    ({"pool": "p", "limit": "1001"}, "limit must be a whole number from 1 to 1000"),
    ({"pool": "p", "limit": "-5"}, "limit must be a whole number"),
    ({"pool": "p", "limit": "1e3"}, "limit must be a whole number"),
    ({"pool": "p", "handler": "has space"}, "handler must be 1 to 512 printable characters"),
    ({"pool": "p", "handler": "tab\there"}, "handler must be"),
    ({"pool": "p", "sort": "id"}, "unknown query parameter 'sort'"),
])
def test_a_bad_jobs_filter_is_one_line_naming_the_field(params: dict[str, str], said: str) -> None:
    with pytest.raises(forms.BadInput) as got:
        forms.jobs_filter(params)
    message = str(got.value)
    assert said in message
    assert "\n" not in message and len(message) <= 300
    assert "--" not in message  # the page's field names, not the CLI's flags


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("15m", 900), ("24h", 86400), ("120", 120)])
def test_the_window_is_the_stats_commands(text: str, seconds: int) -> None:
    assert forms.window({"window": text}) == (text, seconds)
    assert forms.window({}) == ("1h", 3600)


@pytest.mark.parametrize("text", ["30s", "25h", "1w", "soon", "90s"])
def test_a_bad_window_is_refused(text: str) -> None:
    with pytest.raises(forms.BadInput, match=r"^window: invalid window"):
        forms.window({"window": text})


def test_a_job_reference_and_a_dead_letter_entry_are_checked() -> None:
    assert forms.job_ref({"pool": "p", "id": "team-a/nightly"}) == ("p", "team-a/nightly")
    for bad in ({"pool": "p"}, {"pool": "p", "id": "two words"}, {"pool": "p", "id": "x" * 513}, {"id": "j"}):
        with pytest.raises(forms.BadInput):
            forms.job_ref(bad)
    assert forms.entry_id("1700000000000-0") == "1700000000000-0"
    for bad_entry in (None, "", "1700000000000", "abc-1", "1-2-3", "1700000000000-0 OR 1"):
        with pytest.raises(forms.BadInput, match="entry must be a dead-letter entry id"):
            forms.entry_id(bad_entry)


def test_pages_refuse_parameters_they_do_not_take() -> None:
    forms.only({"pool": "p"}, "pool", "window")
    with pytest.raises(forms.BadInput, match="unknown query parameter 'x'"):
        forms.only({"pool": "p", "x": "1"}, "pool")


def test_the_namespace_is_a_kubernetes_name() -> None:
    assert forms.namespace("team-a") == "team-a"
    for bad in ("Team", "a/b", "-a", "a" * 64, ""):
        with pytest.raises(forms.BadInput):
            forms.namespace(bad)


@given(st.dictionaries(st.sampled_from(["pool", "state", "handler", "since", "limit", "x"]), st.text(max_size=40)))
def test_any_query_is_either_a_filter_or_one_clear_line(params: dict[str, str]) -> None:
    try:
        chosen = forms.jobs_filter(params)
    except forms.BadInput as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 300
        return
    chosen.query()  # a filter that passed is one the CLI's query takes
    assert forms.POOL.fullmatch(chosen.pool)


# --------------------------------------------------------------------------- CSRF tokens


def test_a_csrf_token_goes_with_its_cookie_and_console_only() -> None:
    tokens = csrf.Tokens()
    cookie = tokens.new_cookie()
    token = tokens.token(cookie)
    assert tokens.valid(cookie, token)
    assert not tokens.valid(cookie, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not tokens.valid(tokens.new_cookie(), token)  # another browser's cookie
    assert not tokens.valid(None, token) and not tokens.valid(cookie, None) and not tokens.valid("", "")
    assert not csrf.Tokens().valid(cookie, token)  # a restarted console (a new key) refuses old pages
    assert cookie not in token and len(token) == 64


def test_an_origin_header_must_name_the_console_itself() -> None:
    assert csrf.same_origin(None, "127.0.0.1:8089")
    assert csrf.same_origin("http://127.0.0.1:8089", "127.0.0.1:8089")
    assert not csrf.same_origin("http://evil.example", "127.0.0.1:8089")
    assert not csrf.same_origin("null", "127.0.0.1:8089")
    assert csrf.same_origin("https://127.0.0.1:8089", "127.0.0.1:8089")  # a proxy that ends TLS
    assert not csrf.same_origin("http://127.0.0.1:8090", "127.0.0.1:8089")
    assert not csrf.same_origin("http://127.0.0.1:8089", None)


def test_a_console_on_loopback_answers_to_loopback_names_only() -> None:
    for header in ("127.0.0.1:8089", "localhost:8089", "[::1]:8089", "localhost", "127.0.0.2:1"):
        assert csrf.host_allowed(header, "127.0.0.1"), header
    for header in ("evil.example:8089", "evil.example", "127.0.0.1.evil.example:8089", "", None, "[::2]:80"):
        assert not csrf.host_allowed(header, "127.0.0.1"), header
    assert csrf.host_allowed("console.internal:8089", "0.0.0.0")  # not loopback: a proxy's job
