"""`wassette secret …` and `wassette env …` through the installed CLI: values in Wassette's
secrets layout (never in the log), key names as events, and the instance environment."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import yaml

from tests import wasm_fixtures as fx
from tests.conftest import BOTH, Env, cli_history, ok

# An id whose secrets file name needs Wassette's sanitizing: '_' runs collapse, trailing '_' go.
CID = "my__comp.v2_"
SANITIZED = "my_comp.v2"


def attach(env: Env, cid: str = CID) -> None:
    src = env.root / "inputs" / "c.wasm"
    src.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(src, kind="simple")
    ok(env.run("component", "attach", str(src), "--id", cid))


def mode(path: os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def listing(env: Env, cid: str = CID, *extra: str) -> list[dict[str, Any]]:
    doc = json.loads(ok(env.run("secret", "list", cid, "-o", "json", *extra)).out)
    assert doc["component_id"] == cid
    secrets: list[dict[str, Any]] = doc["secrets"]
    return secrets


# ---------------------------------------------------------------------------------------------


@BOTH
def test_secret_set_list_delete_and_file_layout(env: Env) -> None:
    attach(env)
    secrets_file = env.secrets_dir / f"{SANITIZED}.yaml"
    values = {
        "API_KEY": "k-123",
        "NUMERIC": "0123",  # must stay a string, leading zero included
        "YAMLISH": "yes: # not a comment",
        "EMPTY": "",
        "UNICODE": "pässwörd ✓",
        "LONG": "L" * 300 + "-end",  # longer than any table column
    }
    args = [f"{k}={v}" for k, v in values.items()]
    res = ok(env.run("secret", "set", CID, *args[:3], "-o", "json"))
    doc = json.loads(res.out)
    assert [e["type"] for e in doc["events"]] == ["secret.keys_set"]
    assert doc["events"][0]["data"] == {
        "component_id": CID,
        "keys": ["API_KEY", "NUMERIC", "YAMLISH"],
    }
    stdin = "# a comment\n\n" + "\n".join(args[3:]) + "\n"
    res = ok(env.run("secret", "set", CID, "--stdin", input=stdin))
    assert "EMPTY" in res.out and "LONG" in res.out and "UNICODE" in res.out
    assert "pässwörd" not in res.out

    # One flat KEY: value YAML map in <secrets dir>/<sanitized id>.yaml, nothing else there.
    assert sorted(p.name for p in env.secrets_dir.iterdir()) == [secrets_file.name]
    assert yaml.safe_load(secrets_file.read_text()) == values
    assert mode(env.secrets_dir) == 0o700
    assert mode(secrets_file) == 0o600

    entries = listing(env)
    assert entries == [{"key": k, "declared": True, "has_value": True} for k in sorted(values)]
    shown = listing(env, CID, "--show-values")
    assert {e["key"]: e["value"] for e in shown} == values
    text = ok(env.run("secret", "list", CID)).out
    assert "k-123" not in text and "pässwörd" not in text
    rows = [ln.split() for ln in text.splitlines()[1:]]
    assert rows == [[k, "ok"] for k in sorted(values)]
    # Asked-for values are printed whole, never clipped like other table cells.
    text = ok(env.run("secret", "list", CID, "--show-values")).out
    assert values["LONG"] in text.split()

    res = ok(env.run("secret", "delete", CID, "NUMERIC", "EMPTY", "-o", "json"))
    assert [e["data"] for e in json.loads(res.out)["events"]] == [
        {"component_id": CID, "keys": ["EMPTY", "NUMERIC"]}
    ]
    left = {k: v for k, v in values.items() if k not in ("NUMERIC", "EMPTY")}
    assert yaml.safe_load(secrets_file.read_text()) == left
    assert mode(secrets_file) == 0o600
    listed = json.loads(ok(env.run("component", "list", "-o", "json")).out)
    assert listed["components"][0]["secret_keys"] == sorted(left)

    # Deleting the last keys removes the file.
    ok(env.run("secret", "delete", CID, *left))
    assert not secrets_file.exists()
    assert ok(env.run("secret", "list", CID)).out.strip() == "no secrets"

    types = [(e["type"], e["data"]["keys"]) for e in cli_history(env, "--type", "secret.")]
    assert types == [
        ("secret.keys_set", ["API_KEY", "NUMERIC", "YAMLISH"]),
        ("secret.keys_set", ["EMPTY", "LONG", "UNICODE"]),
        ("secret.keys_deleted", ["EMPTY", "NUMERIC"]),
        ("secret.keys_deleted", sorted(left)),
    ]


def test_secret_modes_under_umask_000(env: Env) -> None:
    attach(env, "plain")
    old = os.umask(0)
    try:
        ok(env.run("secret", "set", "plain", "A=1"))
    finally:
        os.umask(old)
    assert mode(env.secrets_dir) == 0o700
    assert mode(env.secrets_dir / "plain.yaml") == 0o600
    assert not [p for p in env.secrets_dir.iterdir() if p.name != "plain.yaml"]

    # A secrets dir that someone opened up is closed again on the next write.
    os.chmod(env.secrets_dir, 0o755)
    os.chmod(env.secrets_dir / "plain.yaml", 0o644)
    old = os.umask(0)
    try:
        ok(env.run("secret", "set", "plain", "B=2"))
    finally:
        os.umask(old)
    assert mode(env.secrets_dir) == 0o700
    assert mode(env.secrets_dir / "plain.yaml") == 0o600


@BOTH
def test_rotation_is_an_event_and_missing_values_are_flagged(env: Env) -> None:
    attach(env, "svc")
    ok(env.run("secret", "set", "svc", "TOKEN=v1", "OTHER=o"))
    ok(env.run("secret", "set", "svc", "TOKEN=v2"))
    ok(env.run("secret", "set", "svc", "TOKEN=v2"))  # same value again: still an audit fact
    events = cli_history(env, "--type", "secret.keys_set")
    assert [e["data"]["keys"] for e in events] == [["OTHER", "TOKEN"], ["TOKEN"], ["TOKEN"]]
    assert len({e["tx"] for e in events}) == 3
    assert {e["key"]: e["value"] for e in listing(env, "svc", "--show-values")} == {
        "TOKEN": "v2",
        "OTHER": "o",
    }

    # Values lost on disk: the keys are still declared and flagged as missing a value.
    secrets_file = env.secrets_dir / "svc.yaml"
    secrets_file.unlink()
    assert listing(env, "svc") == [
        {"key": "OTHER", "declared": True, "has_value": False},
        {"key": "TOKEN", "declared": True, "has_value": False},
    ]
    # A key on disk that the log does not know is flagged as not declared.
    secrets_file.write_text("STRAY: s\n")
    rows = [ln.split(None, 1) for ln in ok(env.run("secret", "list", "svc")).out.splitlines()[1:]]
    assert rows == [
        ["OTHER", "missing value"],
        ["STRAY", "not declared"],
        ["TOKEN", "missing value"],
    ]

    # The next command that rewrites the file first records what was done to it by hand (as
    # `state sync` would: keys gone from the file were deleted, STRAY was added), then its own.
    ok(env.run("secret", "set", "svc", "TOKEN=v3"))
    assert listing(env, "svc") == [
        {"key": "STRAY", "declared": True, "has_value": True},
        {"key": "TOKEN", "declared": True, "has_value": True},
    ]
    drift = [e for e in cli_history(env) if e["actor"] == "filesystem"]
    assert [(e["type"], e["data"]["keys"]) for e in drift] == [
        ("secret.keys_set", ["STRAY"]),
        ("secret.keys_deleted", ["OTHER", "TOKEN"]),
    ]
    assert yaml.safe_load(secrets_file.read_text()) == {"STRAY": "s", "TOKEN": "v3"}


@BOTH
def test_env_set_unset_list(env: Env) -> None:
    env.store().close()  # type: ignore[attr-defined]  # an empty store (reads never create one)
    assert ok(env.run("env", "list")).out.strip() == "no variables"
    res = ok(env.run("env", "set", "LOG_LEVEL=info", "B_URL=http://x/?a=b", "-o", "json"))
    doc = json.loads(res.out)
    # The first change of a fresh store also records where it materializes (paths.set).
    assert [(e["type"], e["data"]) for e in doc["events"]][1:] == [
        ("env.set", {"key": "B_URL", "value": "http://x/?a=b"}),
        ("env.set", {"key": "LOG_LEVEL", "value": "info"}),
    ]
    assert all(e["component_id"] is None for e in doc["events"])
    assert json.loads(ok(env.run("env", "list", "-o", "json")).out) == {
        "B_URL": "http://x/?a=b",
        "LOG_LEVEL": "info",
    }
    rows = [ln.split() for ln in ok(env.run("env", "list")).out.splitlines()]
    assert rows == [["KEY", "VALUE"], ["B_URL", "http://x/?a=b"], ["LOG_LEVEL", "info"]]

    # Setting the same value is no change; a new value is one event.
    assert "no change" in ok(env.run("env", "set", "LOG_LEVEL=info")).out
    doc = json.loads(ok(env.run("env", "set", "LOG_LEVEL=debug", "-o", "json")).out)
    assert [e["data"] for e in doc["events"]] == [{"key": "LOG_LEVEL", "value": "debug"}]

    doc = json.loads(ok(env.run("env", "unset", "B_URL", "-o", "json")).out)
    assert [(e["type"], e["data"]) for e in doc["events"]] == [("env.unset", {"key": "B_URL"})]
    assert yaml.safe_load(ok(env.run("env", "list", "-o", "yaml")).out) == {"LOG_LEVEL": "debug"}
    events = cli_history(env, "--type", "env.")
    assert [(e["type"], e["data"]["key"]) for e in events] == [
        ("env.set", "B_URL"),
        ("env.set", "LOG_LEVEL"),
        ("env.set", "LOG_LEVEL"),
        ("env.unset", "B_URL"),
    ]
