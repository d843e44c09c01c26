"""Audit queries through the installed CLI: `state history` (filters, text/json/yaml), `state show`,
`state diff`, `state blame` with several actors, and `state tag`/`state tags`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import Env, assert_refused, ok, opened, tree_bytes
from wassette_state.store.usecases import commands, secret_commands

SECRET_API = "api-value-must-not-appear"
SECRET_TOKEN = "token-value-must-not-appear"
POLICY = 'version: "1.0"\ndescription: weather\npermissions: {}\n'
ISO_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
EVENT_KEYS = {
    "seq",
    "tx",
    "recorded_at",
    "actor",
    "kind",
    "command",
    "type",
    "component_id",
    "data",
    "reason",
}


def as_json(env: Env, *args: str) -> Any:
    return json.loads(ok(env.run(*args, "-o", "json")).out)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """Seven transactions by four actors (dave's through the CLI), and a tag after tx 4.

    tx1 alice  attach weather + policy      tx5 bob    attach fetch
    tx2 bob    secret API for weather       tx6 dave   secret TOKEN for weather (CLI)
    tx3 carol  grant network (policy)       tx7 alice  env LOG=debug
    tx4 alice  env LOG=info
    """
    env = Env(tmp_path_factory.mktemp("history"))
    inputs = env.root / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "weather.wasm", kind="weather")
    fx.write_component(inputs / "fetch.wasm", kind="simple")
    (inputs / "weather.policy.yaml").write_text(POLICY)
    with opened(env, "alice@x") as s:
        commands.attach(s, str(inputs / "weather.wasm"), None, str(inputs / "weather.policy.yaml"))
    with opened(env, "bob@x") as s:
        secret_commands.secret_set(s, "weather", {"API": SECRET_API})
    with opened(env, "carol@x") as s:
        commands.permission(s, "grant", "weather", "network", "api.example.com")
    with opened(env, "alice@x") as s:
        commands.env_set(s, {"LOG": "info"})
    with opened(env, "bob@x") as s:
        commands.attach(s, str(inputs / "fetch.wasm"))
    ok(env.run("secret", "set", "weather", f"TOKEN={SECRET_TOKEN}", actor="dave@x"))
    with opened(env, "alice@x") as s:
        commands.env_set(s, {"LOG": "debug"})
        from wassette_state.store.usecases.history import add_tag

        add_tag(s, "t4", "tx:4")
    return env


@pytest.fixture(scope="module")
def everything(site: Env) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = as_json(site, "state", "history")
    return events


ACTORS = {
    1: "alice@x",
    2: "bob@x",
    3: "carol@x",
    4: "alice@x",
    5: "bob@x",
    6: "dave@x",
    7: "alice@x",
}


# --------------------------------------------------------------------------- history


def test_history_json_is_the_documented_shape(site: Env, everything: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert sorted({e["tx"] for e in everything}) == list(range(1, 8))
    times = [e["recorded_at"] for e in everything]
    assert all(ISO_US.fullmatch(t) for t in times), times
    assert times == sorted(times)
    for e in everything:
        assert set(e) == EVENT_KEYS, e
        assert e["actor"] == ACTORS[e["tx"]]
        assert e["kind"] == "change"
        assert e["reason"] is None
        assert isinstance(e["command"], str) and e["command"]
    types = [(e["tx"], e["type"], e["component_id"]) for e in everything]
    assert types == [
        (1, "paths.set", None),
        (1, "component.attached", "weather"),
        (1, "policy.attached", "weather"),
        (2, "secret.keys_set", "weather"),
        (3, "policy.changed", "weather"),
        (4, "env.set", None),
        (5, "component.attached", "fetch"),
        (6, "secret.keys_set", "weather"),
        (7, "env.set", None),
    ]
    # Secret events carry key names only.
    secret_events = [e for e in everything if e["type"].startswith("secret.")]
    assert [e["data"] for e in secret_events] == [
        {"component_id": "weather", "keys": ["API"]},
        {"component_id": "weather", "keys": ["TOKEN"]},
    ]
    assert everything[5]["data"] == {"key": "LOG", "value": "info"}
    assert everything[4]["data"]["change"]["op"] == "grant"


def test_history_yaml_is_the_same_data(site: Env, everything: list[dict[str, Any]]) -> None:
    out = ok(site.run("state", "history", "-o", "yaml")).out
    assert yaml.safe_load(out) == everything
    assert SECRET_API not in out and SECRET_TOKEN not in out


def test_history_text_is_a_readable_table(site: Env, everything: list[dict[str, Any]]) -> None:
    out = ok(site.run("state", "history")).out
    lines = out.splitlines()
    assert lines[0].split() == [
        "SEQ",
        "TX",
        "TIME",
        "(UTC)",
        "ACTOR",
        "KIND",
        "TYPE",
        "COMPONENT",
        "DETAIL",
    ]
    rows = lines[1:]
    assert len(rows) == len(everything)  # one line per event
    for row, e in zip(rows, everything, strict=True):
        cells = row.split()
        assert cells[0] == str(e["seq"]) and cells[1] == str(e["tx"])
        assert e["actor"] in cells and e["type"] in cells
        assert e["recorded_at"][:10] == cells[2]
    assert "api.example.com" in rows[4]  # the grant is summarized
    assert "LOG=info" in rows[5]
    assert SECRET_API not in out and SECRET_TOKEN not in out


Pred = Callable[[dict[str, Any]], bool]

FILTERS: dict[str, tuple[tuple[str, ...], Pred]] = {
    "component": (("--component", "weather"), lambda e: e["component_id"] == "weather"),
    "type-prefix-dot": (("--type", "policy."), lambda e: e["type"].startswith("policy.")),
    "type-family": (("--type", "secret"), lambda e: e["type"].startswith("secret.")),
    "actor": (("--actor", "bob@x"), lambda e: e["actor"] == "bob@x"),
    "tx": (("--tx", "3"), lambda e: e["tx"] == 3),
    "since-until": (("--since", "tx:2", "--until", "tag:t4"), lambda e: e["tx"] in (3, 4)),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_history_filters(site: Env, everything: list[dict[str, Any]], name: str) -> None:
    args, pred = FILTERS[name]
    got = as_json(site, "state", "history", *args)
    expected = [e for e in everything if pred(e)]
    assert expected, "the filter must select something for the test to mean anything"
    assert len(expected) < len(everything)
    assert got == expected


def test_history_limit_and_reverse(site: Env, everything: list[dict[str, Any]]) -> None:
    newest = as_json(site, "state", "history", "--limit", "3", "--reverse")
    assert newest == list(reversed(everything))[:3]


def test_history_with_nothing_matching(site: Env) -> None:
    assert ok(site.run("state", "history", "--actor", "nobody@x")).out.strip() == "no events"


def test_history_refuses_a_bad_component_id(site: Env) -> None:
    before = tree_bytes(site.root)
    assert_refused(site, site.run("state", "history", "--component", "../etc"), 2)
    assert tree_bytes(site.root) == before


# --------------------------------------------------------------------------- show


def test_show_json_is_the_export_format(site: Env) -> None:
    pinned = {"SOURCE_DATE_EPOCH": "1764067200"}
    shown = json.loads(ok(site.run("state", "show", "-o", "json", extra_env=pinned)).out)
    exported = json.loads(ok(site.run("state", "export", "-", extra_env=pinned)).out)
    assert shown == exported
    assert [c["component_id"] for c in shown["components"]] == ["fetch", "weather"]
    weather = shown["components"][1]
    assert weather["secrets"] == {"env_keys": ["API", "TOKEN"]}
    assert "api.example.com" in weather["policy"]["policy_content"]
    assert shown["environment"] == {"LOG": "debug"}
    assert shown["as_of"]["seq"] == 9


def test_show_at_a_past_point_yaml(site: Env) -> None:
    doc = yaml.safe_load(ok(site.run("state", "show", "--at", "tag:t4", "-o", "yaml")).out)
    assert doc["as_of"]["seq"] == 6 and doc["as_of"]["tag"] == "t4"
    assert [c["component_id"] for c in doc["components"]] == ["weather"]
    assert doc["components"][0]["secrets"] == {"env_keys": ["API"]}
    assert doc["environment"] == {"LOG": "info"}


def test_show_text(site: Env) -> None:
    out = ok(site.run("state", "show", "--at", "tx:2")).out
    assert "as of seq 4" in out
    assert "weather" in out and "fetch" not in out
    assert "API" in out and SECRET_API not in out


# --------------------------------------------------------------------------- diff


def test_diff_defaults_to_now(site: Env) -> None:
    changes = as_json(site, "state", "diff", "tag:t4")
    for c in changes:
        assert set(c) == {"component_id", "field", "before", "after"}
    by_field = {(c["component_id"], c["field"]): (c["before"], c["after"]) for c in changes}
    assert by_field.pop(("fetch", "component")) == (None, "present")
    before, after = by_field.pop(("fetch", "wasm_sha256"))
    assert before is None and re.fullmatch(r"[0-9a-f]{64}", after)
    assert by_field.pop(("weather", "secret_keys")) == (["API"], ["API", "TOKEN"])
    assert by_field.pop((None, "env.LOG")) == ("info", "debug")
    assert by_field == {}


def test_diff_of_a_policy_change_shows_both_documents(site: Env) -> None:
    changes = as_json(site, "state", "diff", "tx:2", "tx:3")
    assert [(c["component_id"], c["field"]) for c in changes] == [("weather", "policy")]
    before, after = changes[0]["before"], changes[0]["after"]
    assert before["policy_content"] == POLICY
    assert "api.example.com" in after["policy_content"]
    assert before["source_uri"] == after["source_uri"]


def test_diff_of_equal_points_is_empty(site: Env) -> None:
    out = ok(site.run("state", "diff", "seq:6", "tag:t4")).out
    assert out.strip() == "no differences between seq 6 and seq 6"


def test_diff_text_table(site: Env) -> None:
    out = ok(site.run("state", "diff", "seq:0", "tx:1")).out
    assert out.splitlines()[0] == "seq 0 → seq 3"
    assert out.splitlines()[1].split() == ["COMPONENT", "FIELD", "BEFORE", "AFTER"]
    assert re.search(r"^weather\s+component\s+-\s+present$", out, re.M)
    assert re.search(r"^-\s+paths\s+-\s+", out, re.M)


# --------------------------------------------------------------------------- blame


def test_blame_names_who_last_set_each_aspect(site: Env, everything: list[dict[str, Any]]) -> None:
    entries = as_json(site, "state", "blame", "weather")
    by_aspect = {e["aspect"]: e for e in entries}
    assert list(by_aspect) == ["wasm", "policy", "secret:API", "secret:TOKEN"]
    expected = {
        "wasm": (1, "alice@x", "component.attached"),
        "policy": (3, "carol@x", "policy.changed"),
        "secret:API": (2, "bob@x", "secret.keys_set"),
        "secret:TOKEN": (6, "dave@x", "secret.keys_set"),
    }
    seq_time = {e["seq"]: e["recorded_at"] for e in everything}
    for aspect, (tx, actor, type_) in expected.items():
        e = by_aspect[aspect]
        assert (e["tx"], e["actor"], e["type"]) == (tx, actor, type_), aspect
        assert e["recorded_at"] == seq_time[e["seq"]]
        assert e["kind"] == "change"
        assert e["command"]
    text = ok(site.run("state", "blame", "weather")).out
    row = next(ln for ln in text.splitlines() if ln.startswith("secret:TOKEN"))
    assert "dave@x" in row and "secret.keys_set" in row


def test_blame_unknown_component(site: Env) -> None:
    assert_refused(site, site.run("state", "blame", "nope"), 2, "unknown component")


def test_blame_no_policy_is_set_by_the_detach_not_a_later_reattach(tmp_path: Path) -> None:
    env = Env(tmp_path)
    fx.write_component(tmp_path / "one.wasm", kind="weather")
    fx.write_component(tmp_path / "two.wasm", kind="simple")
    (tmp_path / "p.yaml").write_text(POLICY)
    with opened(env, "alice@x") as s:
        commands.attach(s, str(tmp_path / "one.wasm"), "w")
        commands.policy_attach(s, "w", str(tmp_path / "p.yaml"))
    with opened(env, "bob@x") as s:
        commands.policy_detach(s, "w")
    with opened(env, "carol@x") as s:
        commands.attach(s, str(tmp_path / "two.wasm"), "w")  # new bytes: keeps (no) policy
    by_aspect = {e["aspect"]: e for e in as_json(env, "state", "blame", "w")}
    assert (by_aspect["wasm"]["actor"], by_aspect["wasm"]["tx"]) == ("carol@x", 4)
    assert (by_aspect["policy"]["actor"], by_aspect["policy"]["type"]) == (
        "bob@x",
        "policy.detached",
    )


def test_blame_only_looks_at_the_current_life(tmp_path: Path) -> None:
    """After detach and a fresh attach, the old life's policy/secrets are not blamed."""
    env = Env(tmp_path)
    fx.write_component(tmp_path / "w.wasm", kind="weather")
    (tmp_path / "p.yaml").write_text(POLICY)
    with opened(env, "alice@x") as s:
        commands.attach(s, str(tmp_path / "w.wasm"), None, str(tmp_path / "p.yaml"))
        secret_commands.secret_set(s, "w", {"K": "v"})
        commands.detach(s, "w")
    with opened(env, "bob@x") as s:
        commands.attach(s, str(tmp_path / "w.wasm"))
    entries = as_json(env, "state", "blame", "w")
    assert [(e["aspect"], e["actor"], e["type"]) for e in entries] == [
        ("wasm", "bob@x", "component.attached"),
        ("policy", "bob@x", "component.attached"),
    ]


# --------------------------------------------------------------------------- tags


def test_tags(tmp_path: Path) -> None:
    env = Env(tmp_path)
    with opened(env, "alice@x") as s:
        commands.env_set(s, {"A": "1"})
        commands.env_set(s, {"A": "2"})
    assert "tagged seq 3 as release-1" in ok(env.run("state", "tag", "release-1")).out
    tagged = as_json(env, "state", "tag", "first", "--at", "tx:1")
    assert tagged == {"status": "ok", "name": "first", "seq": 2}

    listed = as_json(env, "state", "tags")
    assert [(t["name"], t["seq"], t["actor"]) for t in listed] == [
        ("first", 2, "tester@test"),
        ("release-1", 3, "tester@test"),
    ]
    assert all(ISO_US.fullmatch(t["created_at"]) for t in listed)

    # Unique names; a bad name; both refused with nothing written.
    before = tree_bytes(env.root)
    assert_refused(env, env.run("state", "tag", "first"), 2, "already exists")
    assert_refused(env, env.run("state", "tag", "../x"), 2, "invalid tag name")
    assert tree_bytes(env.root) == before

    # Usable as tag:NAME anywhere (show and history use the module-scoped tag).
    assert as_json(env, "state", "diff", "tag:first", "tag:release-1") == [
        {"component_id": None, "field": "env.A", "before": "1", "after": "2"}
    ]
    text = ok(env.run("state", "tags")).out
    assert text.splitlines()[0].split()[:2] == ["NAME", "SEQ"]
    assert "release-1" in text and "first" in text


def test_no_tags(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.store().close()  # type: ignore[attr-defined]  # an empty store (reads never create one)
    assert ok(env.run("state", "tags")).out.strip() == "no tags"
