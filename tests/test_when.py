"""WHEN: the one parser behind every --at/--to/--since/--until (pure unit tests), and how the
installed CLI resolves each form against a real log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import wasm_fixtures as fx
from tests.conftest import Env, assert_refused, ok, opened, tree_bytes
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.when import Point, parse_when
from wassette_state.store.persistence import log
from wassette_state.store.persistence.points import resolve_point
from wassette_state.store.usecases import commands, secret_commands

NOW = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z in microseconds
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def us_of(dt: datetime) -> int:
    """Exact microseconds since the epoch (integer arithmetic, no float rounding)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // timedelta(microseconds=1)


def p(text: str) -> Point:
    return parse_when(text, NOW)


# --------------------------------------------------------------------------- parser: accepted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),  # naive = UTC
        ("2026-11-25 10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00+02:00", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("2026-11-25T10:00:00-05:30", datetime(2026, 11, 25, 15, 30, tzinfo=UTC)),
        ("2026-11-25T10:00:00.123456Z", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("  2026-11-25T10:00:00Z\n", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("1969-12-31T23:59:59Z", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_iso_8601(text: str, expected: datetime) -> None:
    assert p(text) == Point("time", us_of(expected))


@pytest.mark.parametrize(
    ("text", "expected_us"),
    [
        ("0", 0),
        ("1764067200", 1_764_067_200_000_000),
        ("1764067200.5", 1_764_067_200_500_000),
        ("1764067200.000001", 1_764_067_200_000_001),
        (" 1764067200 ", 1_764_067_200_000_000),
    ],
)
def test_unix_seconds(text: str, expected_us: int) -> None:
    assert p(text) == Point("time", expected_us)


@pytest.mark.parametrize(
    ("text", "age_s"),
    [("0s", 0), ("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259_200), ("1w", 604_800)],
)
def test_relative_ages_count_back_from_now(text: str, age_s: int) -> None:
    assert p(text) == Point("time", NOW - age_s * 1_000_000)
    # The same text means a different instant when "now" moves: ages are relative.
    assert parse_when(text, NOW + 5_000_000) == Point("time", NOW + 5_000_000 - age_s * 1_000_000)


def test_huge_relative_age_is_clamped_into_a_64_bit_integer() -> None:
    point = p("999999999w")
    assert point.kind == "time"
    assert isinstance(point.value, int) and -(2**63) <= point.value < 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seq:0", Point("seq", 0)),
        ("seq:42", Point("seq", 42)),
        (" seq:7 ", Point("seq", 7)),
        ("seq:007", Point("seq", 7)),
        ("tx:0", Point("tx", 0)),
        ("tx:3", Point("tx", 3)),
        ("tag:release-1.0_b", Point("tag", "release-1.0_b")),
        ("tag:" + "a" * 100, Point("tag", "a" * 100)),
    ],
)
def test_seq_tx_tag(text: str, expected: Point) -> None:
    assert p(text) == expected


def test_label_names_the_point() -> None:
    assert p("seq:5").label == "seq:5"
    assert p("tag:x").label == "tag:x"


def test_future_has_one_second_of_slack_and_no_more() -> None:
    assert p(f"{NOW // 1_000_000}.500000").value == NOW + 500_000
    assert p(f"{NOW // 1_000_000 + 1}").value == NOW + 1_000_000
    with pytest.raises(ValidationError, match="future"):
        p(f"{NOW // 1_000_000 + 2}")
    future = (EPOCH + timedelta(microseconds=NOW + 2_000_000)).isoformat()
    with pytest.raises(ValidationError, match="future"):
        p(future)


# --------------------------------------------------------------------------- parser: refused


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yesterday",
        "now",
        "seq:",
        "seq:-1",
        "seq:1.5",
        "seq:abc",
        "seq: 1",
        "seq:" + "1" * 16,
        "seq:²",  # a Unicode digit that int() cannot read
        "tx:",
        "tx:¹",
        "tx:-2",
        "tag:",
        "tag:-x",
        "tag:a/b",
        "tag:../x",
        "tag:" + "a" * 101,
        "5y",
        "-90s",
        "90 s",
        "1e9",
        "NaN",
        "inf",
        "2026-13-01",
        "2026-11-25T25:00:00",
        "2026-11-25T10:00:00+25:00",
        "\x00",
        "2" * 121,
        "2999-01-01T00:00:00Z",  # the future
        "9999-12-31T23:59:59",
        "99999999999",  # unix seconds in year 5138
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        p(text)


def test_error_message_is_one_line_and_clips_long_input() -> None:
    with pytest.raises(ValidationError) as info:
        p("garbage" * 10)
    message = str(info.value)
    assert "\n" not in message
    assert "garbage" * 10 not in message  # clipped, never the whole input
    assert "seq:N" in message  # says what is expected


# --------------------------------------------------------------------------- parser: properties

# Unicode digits that str.isdigit() accepts but int() may not ("²"), and plain ones.
DIGITS = st.one_of(
    st.sampled_from(list("0123456789²³¹⁰٣१")), st.characters(categories=("Nd", "No"))
)
PREFIXES = st.sampled_from(["", "seq:", "tx:", "tag:", "2026-11-25T", "1764067200.", "-"])
TEXTS = st.one_of(
    st.text(max_size=150),
    st.tuples(PREFIXES, st.text(max_size=30)).map("".join),
    st.tuples(
        PREFIXES, st.text(DIGITS, min_size=1, max_size=4), st.sampled_from(["", "s", "d"])
    ).map("".join),
    # Big numbers: ages and unix seconds at and beyond their limits.
    st.tuples(
        st.integers(0, 10**13).map(str), st.sampled_from(["", "s", "m", "h", "d", "w", ".5"])
    ).map("".join),
)


def check_point(point: Point) -> None:
    assert point.kind in ("time", "seq", "tx", "tag")
    if point.kind == "tag":
        assert isinstance(point.value, str) and TAG_RE.fullmatch(point.value)
    else:
        assert isinstance(point.value, int) and not isinstance(point.value, bool)
        assert -(2**63) <= point.value < 2**63  # fits the database's integers
    if point.kind == "time":
        assert isinstance(point.value, int) and point.value <= NOW + 1_000_000
    if point.kind in ("seq", "tx"):
        assert isinstance(point.value, int) and point.value >= 0


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_any_text_gives_a_point_or_a_validation_error(text: str) -> None:
    try:
        point = parse_when(text, NOW)
    except ValidationError as e:
        assert "\n" not in str(e)
        return
    check_point(point)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, NOW))
def test_unix_seconds_are_exact_to_the_microsecond(us: int) -> None:
    assert p(f"{us // 1_000_000}.{us % 1_000_000:06d}") == Point("time", us)
    assert p(str(us // 1_000_000)) == Point("time", us // 1_000_000 * 1_000_000)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2027, 1, 1)),
    st.integers(-14 * 60, 14 * 60),
)
def test_iso_forms_agree_with_each_other(naive: datetime, offset_min: int) -> None:
    expected = us_of(naive)
    assert p(naive.isoformat()) == Point("time", expected)  # naive = UTC
    assert p(naive.isoformat() + "Z") == Point("time", expected)
    tz = timezone(timedelta(minutes=offset_min))
    shifted = naive.replace(tzinfo=UTC).astimezone(tz)
    assert p(shifted.isoformat()) == Point("time", expected)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 999_999_999), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_relative_age_arithmetic(n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    point = p(f"{n}{unit}")
    assert point.value == max(NOW - n * seconds * 1_000_000, -(2**62))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**15 - 1), st.sampled_from(["seq", "tx"]))
def test_seq_and_tx_numbers_round_trip(n: int, kind: str) -> None:
    assert p(f"{kind}:{n}") == Point(kind, n)


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """tx1 attach weather (seq 1 paths, seq 2 attach), tx2 env A=1, tx3 env A=2 + B=x,
    tx4 secret key API; tag `mid` at the end of tx2."""
    env = Env(tmp_path_factory.mktemp("when"))
    src = env.root / "inputs" / "weather.wasm"
    src.parent.mkdir()
    fx.write_component(src, kind="weather")
    with opened(env) as store:
        commands.attach(store, str(src))
        commands.env_set(store, {"A": "1"})
        commands.env_set(store, {"A": "2", "B": "x"})
        secret_commands.secret_set(store, "weather", {"API": "v"})
        from wassette_state.store.usecases.history import add_tag

        add_tag(store, "mid", "tx:2")
    return env


def tx_times(env: Env) -> dict[int, tuple[int, int]]:
    """tx id → (last seq, recorded_at in microseconds), read through the library."""
    with opened(env) as store:
        events = store.history(log.Query())
    return {e.tx_id: (e.seq, e.recorded_at) for e in events}


def resolve(env: Env, when: str) -> int:
    with opened(env) as store, store.reading() as conn:
        return int(resolve_point(conn, when))


def show(env: Env, when: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(env.run("state", "show", "--at", when, "-o", "json")).out)
    return doc


def iso(us: int, z: str = "Z") -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%f") + z


def test_every_form_resolves_to_the_documented_seq(site: Env) -> None:
    times = tx_times(site)
    assert sorted(times) == [1, 2, 3, 4]
    tx2_seq, tx2_us = times[2]
    cases = {
        iso(tx2_us): tx2_seq,  # the instant a transaction was recorded includes it
        iso(tx2_us, ""): tx2_seq,  # naive ISO = UTC
        iso(tx2_us, "+00:00"): tx2_seq,
        iso(tx2_us - 1): times[1][0],  # a microsecond earlier: the state before it
        iso(times[3][1] - 1): tx2_seq,  # between two transactions: the earlier one
        f"{tx2_us // 1_000_000}.{tx2_us % 1_000_000:06d}": tx2_seq,  # unix seconds
        "seq:3": 3,
        "tx:0": 0,
        "tx:3": times[3][0],  # the state after the whole transaction
        "tag:mid": tx2_seq,
        "0s": times[4][0],  # now
        "3d": 0,
    }
    for when, seq in cases.items():
        assert resolve(site, when) == seq, when
    # Through the installed CLI: naive ISO and unix seconds name the same point; what is shown
    # is the state at that seq.
    by_iso = show(site, iso(tx2_us, ""))
    assert by_iso["as_of"]["seq"] == tx2_seq
    assert by_iso["environment"] == {"A": "1"}
    assert [c["component_id"] for c in by_iso["components"]] == ["weather"]
    assert by_iso["components"][0]["secrets"] is None
    by_tag = show(site, "tag:mid")
    assert by_tag["as_of"] == {**by_iso["as_of"], "tag": "mid"}
    assert by_tag["components"] == by_iso["components"]


@pytest.mark.parametrize("when", ["2000-01-01T00:00:00Z", "0", "3d", "999999999w", "seq:0"])
def test_before_the_first_event_resolves_to_seq_0(site: Env, when: str) -> None:
    assert resolve(site, when) == 0


def test_before_the_first_event_shows_the_empty_state(site: Env) -> None:
    doc = show(site, "999999999w")  # a huge age must not overflow the database's integers
    assert doc["as_of"]["seq"] == 0
    assert doc["components"] == []
    assert doc["environment"] == {}


@pytest.mark.parametrize(
    ("when", "contains"),
    [
        ("2999-01-01T00:00:00Z", "future"),
        ("99999999999", "future"),
        ("tag:nope", "unknown tag"),
        ("yesterday", "cannot read"),
        ("seq:999", "does not exist"),
        ("tx:99", "does not exist"),
        ("seq:²", "invalid seq"),
        ("", "empty"),
    ],
)
def test_bad_when_is_refused(site: Env, when: str, contains: str) -> None:
    with pytest.raises(ValidationError, match=contains):
        resolve(site, when)


@pytest.mark.parametrize(
    ("when", "contains"),
    [("2999-01-01T00:00:00Z", "future"), ("tag:nope", "unknown tag"), ("seq:²", "invalid seq")],
)
def test_bad_when_is_exit_2_and_changes_nothing(site: Env, when: str, contains: str) -> None:
    before = tree_bytes(site.root)
    result = site.run("state", "show", "--at", when)
    assert_refused(site, result, 2, contains)
    assert result.out == ""
    assert tree_bytes(site.root) == before


@pytest.mark.parametrize(
    ("args", "when", "contains"),
    [
        (("state", "export", "-", "--at", "{w}"), "tag:nope", "unknown tag"),
        (("state", "history", "--since", "{w}"), "2999-01-01T00:00:00Z", "future"),
        (("state", "history", "--until", "{w}"), "tag:nope", "unknown tag"),
        (("state", "diff", "{w}"), "2999-01-01", "future"),
        (("state", "diff", "seq:0", "{w}"), "soon", "cannot read"),
        (("state", "rollback", "--to", "{w}", "--yes"), "99999999999", "future"),
        (("state", "tag", "later", "--at", "{w}"), "tag:nope", "unknown tag"),
        # An empty WHEN is refused too, never read as "no filter" or "now".
        (("state", "history", "--until", "{w}"), "", "empty"),
        (("state", "tag", "later", "--at", "{w}"), " ", "empty"),
    ],
    ids=[
        "export",
        "history-since",
        "history-until",
        "diff-1",
        "diff-2",
        "rollback",
        "tag",
        "history-empty",
        "tag-empty",
    ],
)
def test_every_when_option_uses_the_parser(
    site: Env, args: tuple[str, ...], when: str, contains: str
) -> None:
    before = tree_bytes(site.root)
    result = site.run(*(a.replace("{w}", when) for a in args))
    assert_refused(site, result, 2, contains)
    assert result.out == ""
    assert tree_bytes(site.root) == before


def test_when_options_accept_every_form(site: Env) -> None:
    times = tx_times(site)
    # history --since is exclusive, --until inclusive; a tag and a tx in one query.
    events = json.loads(
        ok(site.run("state", "history", "--since", "tag:mid", "--until", "tx:3", "-o", "json")).out
    )
    assert {e["tx"] for e in events} == {3}
    # export --at a relative age far back: the empty state, with the as_of it names.
    exported = json.loads(ok(site.run("state", "export", "-", "--at", "3d")).out)
    assert exported["components"] == [] and exported["as_of"]["seq"] == 0
    # diff between two points in two notations (seq and an ISO time).
    changes = json.loads(ok(site.run("state", "diff", "seq:0", iso(times[2][1]), "-o", "json")).out)
    fields = {(c["component_id"], c["field"]) for c in changes}
    assert ("weather", "component") in fields and (None, "env.A") in fields
    assert (None, "env.B") not in fields
