"""The installed `wassette` as a subprocess: global options, `state history`, error contract."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures
from tests.conftest import Env, Result, assert_refused, tree_bytes
from wassette_state.store.persistence import log
from wassette_state.store.usecases.service import Store

ISO_US = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
KEYS = ["seq", "tx", "recorded_at", "actor", "kind", "command", "type", "component_id", "data"]
SECRET = "s3cret-value-never-logged"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """Built through the CLI; the tests on it only read.

    tx1 alice  env set A=1 B=2        seq 1 paths.set, 2 env.set A, 3 env.set B
    tx2 bob    component attach       seq 4 component.attached weather
    tx3 alice  secret set weather     seq 5 secret.keys_set
    tx4 carol  permission grant       seq 6 policy.changed
    tx5 bob    env set A=3            seq 7 env.set
    tx6 alice  env unset B            seq 8 env.unset
    """
    env = Env(tmp_path_factory.mktemp("site"))
    wasm_fixtures.write_component(env.root / "weather.wasm", "weather")
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("alice@test", ("env", "set", "A=1", "B=2")),
        ("bob@test", ("component", "attach", "weather.wasm")),
        ("alice@test", ("secret", "set", "weather", f"API_KEY={SECRET}")),
        ("carol@test", ("permission", "grant", "network", "weather", "api.example.com")),
        ("bob@test", ("env", "set", "A=3")),
        ("alice@test", ("env", "unset", "B")),
    ]
    for actor, args in steps:
        r = env.run(*args, actor=actor)
        assert r.code == 0, (args, r.err)
    return env


def history(env: Env, *args: str) -> list[dict[str, Any]]:
    r = env.run("state", "history", "-o", "json", *args)
    assert r.code == 0, r.err
    assert r.err == ""
    data = json.loads(r.out)
    assert isinstance(data, list)
    return data


def stored(env: Env) -> list[log.StoredEvent]:
    store: Store = env.store()  # type: ignore[assignment]
    try:
        return store.history(log.Query())
    finally:
        store.close()


def iso(us: int) -> str:
    return (
        datetime.fromtimestamp(us // 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{us % 1_000_000:06d}Z"
    )


# ---------------------------------------------------------------- global


def test_version(env: Env) -> None:
    r = env.run("--version")
    assert (r.code, r.out.strip(), r.err) == (0, "wassette-state, version 0.1.0", "")
    assert not env.db.exists()  # printing the version opens no store


def test_help_needs_no_store(env: Env) -> None:
    r = env.run("state", "history", "--help")
    assert r.code == 0
    for option in ("--component", "--type", "--actor", "--since", "--until", "--limit"):
        assert option in r.out
    assert not env.db.exists()


def test_history_of_a_new_store(env: Env) -> None:
    env.store().close()  # type: ignore[attr-defined]  # created empty (reads never create one)
    r = env.run("state", "history")
    assert (r.code, r.out.strip()) == (0, "no events")
    assert history(env) == []


def test_actor_option_and_db_option_override_the_environment(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    r = env.run("--db", str(other), "--actor", "dave@cli", "env", "set", "Z=1")
    assert r.code == 0, r.err
    assert not env.db.exists()
    r = env.run("--db", str(other), "state", "history", "-o", "json")
    assert {e["actor"] for e in json.loads(r.out)} == {"dave@cli"}


# ---------------------------------------------------------------- history shape

JSON = ("state", "history", "-o", "json")
FILTERS: list[tuple[tuple[str, ...], list[int]]] = [
    (("--component", "weather"), [4, 5, 6]),
    (("--type", "policy."), [6]),
    (("--type", "env"), [2, 3, 7, 8]),
    (("--type", "env.set"), [2, 3, 7]),
    (("--actor", "bob@test"), [4, 7]),
    (("--tx", "1"), [1, 2, 3]),
    (("--limit", "2"), [1, 2]),
    (("--limit", "2", "--reverse"), [8, 7]),
    (("--since", "seq:3"), [4, 5, 6, 7, 8]),
    (("--until", "seq:3"), [1, 2, 3]),
    (("--since", "seq:2", "--until", "seq:5"), [3, 4, 5]),
    (("--since", "tx:2"), [5, 6, 7, 8]),
    (("--until", "30d"), []),
    (("--component", "weather", "--since", "seq:4", "--limit", "1"), [5]),
]
FORMATS: list[tuple[str, ...]] = [
    JSON,
    ("state", "history"),
    ("state", "history", "-o", "yaml"),
    ("-o", "json", "state", "history"),
    ("-o", "yaml", "state", "history", "--type", "env."),
]


def run_all(env: Env, invocations: list[tuple[str, ...]]) -> dict[tuple[str, ...], Result]:
    """Independent read-only invocations, run side by side (each is a real process)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: env.run(*args), invocations))
    return dict(zip(invocations, results, strict=True))


def time_points(site: Env) -> dict[str, str]:
    """WHEN strings around transaction 2, from the log itself."""
    at = next(se.recorded_at for se in stored(site) if se.tx_id == 2)
    return {
        "iso": iso(at),
        "iso-1us": iso(at - 1),
        "naive": iso(at).removesuffix("Z"),
        "unix": f"{at // 1_000_000}.{at % 1_000_000:06d}",
    }


@pytest.fixture(scope="module")
def runs(site: Env) -> dict[tuple[str, ...], Result]:
    t = time_points(site)
    timed = [
        (*JSON, "--since", t["iso"]),
        (*JSON, "--until", t["iso"]),
        (*JSON, "--until", t["iso-1us"]),
        (*JSON, "--since", t["naive"]),
        (*JSON, "--until", t["unix"]),
    ]
    return run_all(site, [*FORMATS, *((*JSON, *a) for a, _ in FILTERS), *timed])


def ok_json(r: Result) -> Any:
    assert (r.code, r.err) == (0, ""), r.err
    return json.loads(r.out)


def test_history_json_shape(site: Env, runs: dict[tuple[str, ...], Result]) -> None:
    events = ok_json(runs[JSON])
    truth = stored(site)
    assert len(events) == len(truth) == 8
    for e, se in zip(events, truth, strict=True):
        # DESIGN 5's keys in its order; the transaction's reason is the one additive key.
        assert list(e)[: len(KEYS)] == KEYS
        assert set(e) - set(KEYS) <= {"reason"}
        assert e.get("reason") is None
        assert ISO_US.match(e["recorded_at"]), e["recorded_at"]
        assert e["recorded_at"] == iso(se.recorded_at)
        assert (e["seq"], e["tx"], e["actor"], e["kind"], e["command"]) == (
            se.seq,
            se.tx_id,
            se.actor,
            se.kind,
            se.command,
        )
        assert (e["type"], e["data"]) == (se.type, se.data)
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert [e["tx"] for e in events] == [1, 1, 1, 2, 3, 4, 5, 6]
    assert [e["type"] for e in events] == [
        "paths.set",
        "env.set",
        "env.set",
        "component.attached",
        "secret.keys_set",
        "policy.changed",
        "env.set",
        "env.unset",
    ]
    assert [e["component_id"] for e in events] == [None] * 3 + ["weather"] * 3 + [None] * 2
    assert [e["actor"] for e in events] == ["alice@test"] * 3 + [
        "bob@test",
        "alice@test",
        "carol@test",
        "bob@test",
        "alice@test",
    ]
    assert {e["kind"] for e in events} == {"change"}
    assert events[1]["data"] == {"key": "A", "value": "1"}
    assert events[4]["data"] == {"component_id": "weather", "keys": ["API_KEY"]}
    assert events[0]["data"] == {
        "component_dir": str(site.component_dir),
        "secrets_dir": str(site.secrets_dir),
    }
    assert events[0]["command"] == "env set A B"
    # recorded_at strictly increases from one transaction to the next.
    firsts = [e["recorded_at"] for a, e in zip([None, *events], events, strict=False)
              if a is None or a["tx"] != e["tx"]]  # fmt: skip
    assert firsts == sorted(set(firsts)) and len(firsts) == 6


def test_history_yaml_is_the_same_data(runs: dict[tuple[str, ...], Result]) -> None:
    r = runs[("state", "history", "-o", "yaml")]
    assert r.code == 0, r.err
    assert yaml.safe_load(r.out) == ok_json(runs[JSON])
    r = runs[("-o", "yaml", "state", "history", "--type", "env.")]
    assert yaml.safe_load(r.out) == [e for e in ok_json(runs[JSON]) if e["type"].startswith("env.")]


def test_global_output_option_before_the_command(runs: dict[tuple[str, ...], Result]) -> None:
    assert ok_json(runs[("-o", "json", "state", "history")]) == ok_json(runs[JSON])


def test_history_text(runs: dict[tuple[str, ...], Result]) -> None:
    r = runs[("state", "history")]
    assert r.code == 0 and r.err == ""
    lines = r.out.splitlines()
    assert lines[0].split() == [
        "SEQ", "TX", "TIME", "(UTC)", "ACTOR", "KIND", "TYPE", "COMPONENT", "DETAIL",
    ]  # fmt: skip
    assert len(lines) == 9
    assert [int(ln.split()[0]) for ln in lines[1:]] == list(range(1, 9))
    assert "secret.keys_set" in lines[5] and "API_KEY" in lines[5]
    assert "weather" in lines[4] and "carol@test" in lines[6]
    assert "A=3" in lines[7]


def test_secret_values_never_appear_in_history(
    site: Env, runs: dict[tuple[str, ...], Result]
) -> None:
    for args in FORMATS:
        assert SECRET not in runs[args].text
    assert SECRET.encode() not in site.db.read_bytes()
    assert (site.secrets_dir / "weather.yaml").read_text().count(SECRET) == 1


# ---------------------------------------------------------------- filters


@pytest.mark.parametrize(("args", "expected"), FILTERS, ids=[" ".join(a) for a, _ in FILTERS])
def test_history_filters(
    runs: dict[tuple[str, ...], Result], args: tuple[str, ...], expected: list[int]
) -> None:
    assert [e["seq"] for e in ok_json(runs[(*JSON, *args)])] == expected


def test_since_and_until_by_time(site: Env, runs: dict[tuple[str, ...], Result]) -> None:
    t = time_points(site)

    def seqs_of(*args: str) -> list[int]:
        return [e["seq"] for e in ok_json(runs[(*JSON, *args)])]

    assert seqs_of("--since", t["iso"]) == [5, 6, 7, 8]  # after the point
    assert seqs_of("--until", t["iso"]) == [1, 2, 3, 4]  # up to and including it
    assert seqs_of("--until", t["iso-1us"]) == [1, 2, 3]
    assert seqs_of("--since", t["naive"]) == [5, 6, 7, 8]  # naive = UTC
    assert seqs_of("--until", t["unix"]) == [1, 2, 3, 4]


# ---------------------------------------------------------------- errors

ERRORS: list[tuple[tuple[str, ...], int, str]] = [
    (("state", "history", "--bogus"), 2, "--bogus"),
    (("state", "nope"), 2, "nope"),
    (("state", "history", "-o", "xml"), 2, "xml"),
    (("state", "history", "--since", "yesterday"), 2, "cannot read 'yesterday'"),
    (("state", "history", "--since", ""), 2, "empty"),
    (("state", "history", "--since", "2999-01-01T00:00:00Z"), 2, "in the future"),
    (("state", "history", "--since", "seq:99"), 2, "seq:99 does not exist yet"),
    (("state", "history", "--since", "tx:99"), 2, "tx:99 does not exist"),
    (("state", "history", "--since", "tag:nope"), 2, "unknown tag 'nope'"),
    (("state", "history", "--component", "../etc"), 2, "invalid id"),
    (("state", "history", "--tx", "0"), 2, "--tx"),
    (("state", "history", "--limit", "many"), 2, "--limit"),
    # Refused mutating commands, on the same store.
    (("env", "set", "NOEQUALS"), 2, "expected KEY=VALUE"),
    (("env", "unset", "NEVER_SET"), 2, "'NEVER_SET' is not set"),
    (("component", "attach", "missing.wasm"), 2, "not found"),
    (("secret", "set", "../x", "K=v"), 2, "invalid id"),
    # Bytes that are not UTF-8 reach Python as lone surrogates: bad input, not a crash.
    (("env", "set", "BAD=\udcff\udcfe"), 2, "argument 1 (BAD): value is not valid UTF-8"),
    (("--actor", "x\udcff", "env", "set", "OK=1"), 2, "actor, command or reason is not valid"),
]


@pytest.fixture(scope="module")
def refused(site: Env) -> tuple[dict[tuple[str, ...], Result], bool]:
    before = tree_bytes(site.root)
    results = run_all(site, [c[0] for c in ERRORS])
    return results, tree_bytes(site.root) == before


@pytest.mark.parametrize(
    ("args", "code", "contains"), ERRORS, ids=[ascii(" ".join(c[0])) for c in ERRORS]
)
def test_errors_are_one_line_with_their_exit_code(
    site: Env,
    refused: tuple[dict[tuple[str, ...], Result], bool],
    args: tuple[str, ...],
    code: int,
    contains: str,
) -> None:
    r = refused[0][args]
    assert_refused(site, r, code=code, contains=contains)
    assert r.out == ""


def test_refused_commands_change_nothing(
    refused: tuple[dict[tuple[str, ...], Result], bool],
) -> None:
    assert refused[1], "a refused command changed the database or the files"


def test_error_lines_never_carry_a_traceback_or_a_value(env: Env) -> None:
    r = env.run("env", "set", "GOOD=1", f"bad key={SECRET}")
    assert_refused(env, r, code=2)
    assert SECRET not in r.text
