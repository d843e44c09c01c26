"""Coexistence with Wassette 0.8.0's command line: the `state` commands at the top level too, and
Wassette's own spelling of the commands both tools have (`--component-dir` after the subcommand,
`-o table` / `--output-format`, repeated `--access`, `secret list --show-values --yes`), checked
against the real binary where both can run the same argv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import Env, Result, assert_refused, ok, run_on_tty, tree_bytes

SHORTCUTS = (
    "export",
    "import",
    "history",
    "show",
    "diff",
    "blame",
    "rollback",
    "undo",
    "tag",
    "tags",
    "verify",
    "rebuild",
    "sync",
    "copy",
)
SECRET = "abc-secret-value"


def wasm(env: Env, kind: str = "weather", name: str = "weather") -> str:
    src = env.root / "inputs" / f"{name}.wasm"
    src.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(src, kind=kind)
    return src.as_uri()


def build(env: Env) -> None:
    """weather (policy with a network grant, secret API_KEY) and bare (no policy, no secret)."""
    ok(env.run("component", "load", wasm(env)))
    ok(env.run("component", "load", wasm(env, "simple", "bare")))
    ok(env.run("permission", "grant", "network", "weather", "api.example.com"))
    ok(env.run("secret", "set", "weather", f"API_KEY={SECRET}"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """Built once; the tests on it only read."""
    env = Env(tmp_path_factory.mktemp("site"))
    build(env)
    return env


# ------------------------------------------------------------------ top-level state commands


def test_top_level_commands_are_the_state_command_objects() -> None:
    from wassette_state.cli.main import STATE_SHORTCUTS, cli
    from wassette_state.cli.state import state

    assert STATE_SHORTCUTS == SHORTCUTS
    for name in SHORTCUTS:
        assert cli.commands[name] is state.commands[name], name
    assert cli.commands["state"] is state


def test_top_level_help_lists_each_command_once() -> None:
    from click.testing import CliRunner

    from wassette_state.cli.main import cli

    text = CliRunner().invoke(cli, ["--help"], prog_name="wassette-state").output
    _, rest = text.split("\nCommands:\n")
    commands, shortcuts = rest.split("\nState commands (also spelled 'state NAME'):\n")

    def names(section: str) -> list[str]:
        return [
            ln.split()[0] for ln in section.splitlines() if ln.startswith("  ") and ln[2] != " "
        ]

    groups = sorted(set(cli.commands) - set(SHORTCUTS))
    assert {"component", "env", "permission", "policy", "secret", "state"} <= set(groups)
    assert names(commands) == groups
    assert names(shortcuts) == list(SHORTCUTS)


@pytest.mark.parametrize("name", SHORTCUTS)
def test_top_level_help_is_the_state_help(env: Env, name: str) -> None:
    top = ok(env.run(name, "--help")).out
    nested = ok(env.run("state", name, "--help")).out
    assert top.replace(f"Usage: wassette-state {name}", f"Usage: wassette-state state {name}") == (
        nested
    )
    assert not env.db.exists()  # help opens no store


READ_ONLY: list[tuple[str, ...]] = [
    ("history", "-o", "json"),
    ("history", "--component", "weather", "--type", "policy."),
    ("show", "-o", "json"),
    ("show", "--at", "seq:2"),
    ("diff", "seq:0", "-o", "json"),
    ("diff", "seq:1", "seq:3"),
    ("blame", "weather", "-o", "yaml"),
    ("tags",),
    ("verify", "-o", "json"),
    ("undo", "--dry-run", "-o", "json"),
    ("rollback", "--to", "seq:2", "--dry-run"),
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_top_level_spelling_prints_what_the_state_spelling_prints(
    site: Env, args: tuple[str, ...]
) -> None:
    # `show` prints `exported_at`: pin the clock it honours so both runs print the same second
    pinned = {"SOURCE_DATE_EPOCH": "1764067200"}
    top = ok(site.run(*args, extra_env=pinned))
    nested = ok(site.run("state", *args, extra_env=pinned))
    assert (top.out, top.err) == (nested.out, nested.err)
    assert top.out.strip()


def test_top_level_export_writes_what_state_export_writes(site: Env) -> None:
    def load(path: Path) -> Any:
        doc = yaml.safe_load(path.read_text())
        doc.pop("exported_at")
        return doc

    a, b = site.root / "out" / "a.yaml", site.root / "out" / "b.yaml"
    a.parent.mkdir(exist_ok=True)
    ok(site.run("export", str(a), "--at", "seq:3"))
    ok(site.run("state", "export", str(b), "--at", "seq:3"))
    assert load(a) == load(b)
    assert [c["component_id"] for c in load(a)["components"]] == ["bare", "weather"]


def test_top_level_mutating_commands_act(env: Env) -> None:
    """tag, rollback, undo, import, sync, rebuild, verify through the top-level spelling."""
    build(env)
    ok(env.run("tag", "built"))
    tags = json.loads(ok(env.run("state", "tags", "-o", "json")).out)
    assert [t["name"] for t in tags] == ["built"]
    snap = env.root / "built.yaml"
    ok(env.run("export", str(snap)))

    ok(env.run("component", "unload", "bare"))
    back = json.loads(ok(env.run("rollback", "--to", "tag:built", "--yes", "-o", "json")).out)
    assert back["tx"] is not None and (env.component_dir / "bare.wasm").exists()
    undone = json.loads(ok(env.run("undo", "--yes", "-o", "json")).out)
    assert undone["tx"] is not None and not (env.component_dir / "bare.wasm").exists()

    imported = json.loads(ok(env.run("import", str(snap), "-o", "json")).out)
    assert imported["tx"] is not None and (env.component_dir / "bare.wasm").exists()
    assert json.loads(ok(env.run("import", str(snap), "-o", "json")).out)["events"] == []

    synced = json.loads(ok(env.run("sync", "-o", "json")).out)
    assert synced["drift"] == [] and synced["tx"] is None
    assert json.loads(ok(env.run("rebuild", "-o", "json")).out)["status"] == "ok"
    assert json.loads(ok(env.run("verify", "-o", "json")).out)["ok"] is True
    kinds = [e["kind"] for e in json.loads(ok(env.run("history", "-o", "json")).out)]
    assert "rollback" in kinds and "import" in kinds


# ------------------------------------------------------------------ output formats


FORMAT_PAIRS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("component", "list", "-o", "table"), ("component", "list")),
    (("component", "list", "--output-format", "table"), ("component", "list", "-o", "text")),
    (("component", "list", "--output-format", "json"), ("component", "list", "-o", "json")),
    (("component", "list", "--output-format=yaml"), ("component", "list", "-o", "yaml")),
    (("--output-format", "table", "component", "list"), ("component", "list")),
    (("-o", "table", "history"), ("history",)),
    (("policy", "get", "weather", "-o", "table"), ("policy", "get", "weather")),
    (
        ("policy", "get", "weather", "--output-format", "json"),
        ("policy", "get", "weather", "-o", "json"),
    ),
    (("secret", "list", "weather", "-o", "table"), ("secret", "list", "weather")),
    (
        ("secret", "list", "weather", "--output-format", "yaml"),
        ("secret", "list", "weather", "-o", "yaml"),
    ),
    (("-o", "json", "component", "list", "-o", "table"), ("component", "list")),
]


@pytest.mark.parametrize(
    ("args", "same_as"), FORMAT_PAIRS, ids=[" ".join(p[0]) for p in FORMAT_PAIRS]
)
def test_wassette_output_format_spelling(
    site: Env, args: tuple[str, ...], same_as: tuple[str, ...]
) -> None:
    assert ok(site.run(*args)).out == ok(site.run(*same_as)).out


def test_component_list_table_matches_wassette_listing(env: Env, wassette: Any) -> None:
    ok(env.run("component", "load", wasm(env)))
    ours = json.loads(ok(env.run("component", "list", "--output-format", "json")).out)
    theirs = wassette.json("component", "list", "--output-format", "json")
    assert [(c["id"], c["tools_count"]) for c in ours["components"]] == [
        (c["id"], c["tools_count"]) for c in theirs["components"]
    ]
    assert ours["total"] == theirs["total"] == 1
    table = ok(env.run("component", "list", "-o", "table")).out
    assert table.splitlines()[1].split()[:2] == ["weather", "2"]


# ----------------------------------------------------- --component-dir after the subcommand


def test_component_dir_after_the_subcommand_is_used(env: Env) -> None:
    elsewhere = env.root / "elsewhere"
    d = ("--component-dir", str(elsewhere))
    ok(env.run("component", "load", wasm(env), *d))
    assert (elsewhere / "weather.wasm").exists() and not env.component_dir.exists()
    ok(env.run("permission", "grant", "memory", "weather", "512Mi", *d))
    assert (elsewhere / "weather.policy.yaml").exists()
    listed = json.loads(ok(env.run("component", "list", *d, "-o", "json")).out)
    assert [c["id"] for c in listed["components"]] == ["weather"]
    # `--component-dir=DIR` too, and after the subcommand it wins over the global option.
    ok(
        env.run(
            "--component-dir",
            str(env.root / "nowhere"),
            "permission",
            "reset",
            "weather",
            f"--component-dir={elsewhere}",
        )
    )
    assert not (elsewhere / "weather.policy.yaml").exists()
    assert not (env.root / "nowhere").exists()
    paths = [
        e for e in json.loads(ok(env.run("history", "-o", "json")).out) if e["type"] == "paths.set"
    ]
    assert [p["data"]["component_dir"] for p in paths] == [str(elsewhere)]


SHARED_HELP: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("component", "load"), ("--component-dir",)),
    (("component", "unload"), ("--component-dir",)),
    (("component", "list"), ("--component-dir", "--output-format")),
    (("policy", "get"), ("--component-dir", "--output-format")),
    (("permission", "grant", "storage"), ("--component-dir", "--access")),
    (("permission", "grant", "network"), ("--component-dir",)),
    (("permission", "grant", "environment-variable"), ("--component-dir",)),
    (("permission", "grant", "memory"), ("--component-dir",)),
    (("permission", "revoke", "storage"), ("--component-dir",)),
    (("permission", "revoke", "network"), ("--component-dir",)),
    (("permission", "revoke", "environment-variable"), ("--component-dir",)),
    (("permission", "reset"), ("--component-dir",)),
    (("secret", "list"), ("--component-dir", "--output-format", "--show-values", "--yes")),
    (("secret", "set"), ("--component-dir",)),
    (("secret", "delete"), ("--component-dir",)),
]


@pytest.mark.parametrize(
    ("command", "flags"), SHARED_HELP, ids=[" ".join(c[0]) for c in SHARED_HELP]
)
def test_every_flag_wassette_documents_is_accepted(
    env: Env, wassette: Any, command: tuple[str, ...], flags: tuple[str, ...]
) -> None:
    """Each shared subcommand: the flags in Wassette's own `--help` are in ours."""
    theirs = wassette.ok(*command, "--help").out
    ours = ok(env.run(*command, "--help")).out
    for flag in flags:
        assert flag in theirs, (command, flag)
        assert flag in ours, (command, flag)
    wassette_flags = {w.rstrip(",") for w in theirs.split() if w.startswith("--")}
    assert wassette_flags - {"--help"} <= set(flags)
    if "-o, --output-format" in theirs:
        assert "-o, --output, --output-format" in ours


# ------------------------------------------------------- the same argv through both tools


def strip_nulls(value: Any) -> Any:
    """Wassette writes absent policy sections as explicit nulls; the meaning is the same."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def read_yaml(path: Path) -> Any:
    return strip_nulls(yaml.safe_load(path.read_text())) if path.exists() else None


STEPS: list[tuple[str, ...]] = [
    ("component", "load", "{wasm}"),
    (
        "permission",
        "grant",
        "storage",
        "weather",
        "fs:///tmp/data",
        "--access",
        "read",
        "--access",
        "write",
    ),
    ("permission", "grant", "network", "weather", "api.example.com"),
    ("permission", "grant", "environment-variable", "weather", "API_KEY"),
    ("permission", "grant", "memory", "weather", "512Mi"),
    ("permission", "grant", "network", "weather", "other.example.com"),
    ("permission", "revoke", "network", "weather", "api.example.com"),
    ("permission", "grant", "storage", "weather", "fs:///tmp/out", "--access", "read,write"),
    ("permission", "revoke", "storage", "weather", "fs:///tmp/data"),
    ("permission", "revoke", "environment-variable", "weather", "API_KEY"),
    ("secret", "set", "weather", f"API_KEY={SECRET}", "TOKEN=xyz"),
    ("secret", "delete", "weather", "TOKEN"),
    ("permission", "reset", "weather"),
    ("permission", "grant", "network", "weather", "api.example.com"),
    ("component", "unload", "weather"),
]


def test_the_same_wassette_argv_gives_the_same_files(env: Env, wassette: Any) -> None:
    """Every step through both tools, each on its own component dir given after the subcommand:
    the policy and secrets files agree after each one (Wassette's nulls aside).

    Wassette's `secret` commands use the XDG default secrets dir whenever `--component-dir` is
    given, ignoring WASSETTE_SECRETS_DIR (a quirk); ours keeps resolving the secrets dir as
    always (flag, then WASSETTE_SECRETS_DIR, …), so its file is where a Wassette server started
    with that environment reads it."""
    uri = wasm(env)
    ours, theirs = env.root / "ours", env.root / "theirs"
    xdg_secrets = env.root / "xdg-config" / "wassette" / "secrets"
    compared = 0
    for step in STEPS:
        argv = [uri if a == "{wasm}" else a for a in step]
        ok(env.run(*argv, "--component-dir", str(ours)))
        wassette.ok(*argv, "--component-dir", str(theirs))
        label = " ".join(step)
        assert read_yaml(ours / "weather.policy.yaml") == read_yaml(
            theirs / "weather.policy.yaml"
        ), label
        if step[:2] == ("component", "unload"):
            # The one deliberate difference: Wassette's unload keeps the secrets file; ours
            # removes it (a component attached later under the id must inherit no values),
            # unless --keep-secret-values.
            assert read_yaml(env.secrets_dir / "weather.yaml") is None, label
            assert read_yaml(xdg_secrets / "weather.yaml") == {"API_KEY": SECRET}, label
        else:
            assert read_yaml(env.secrets_dir / "weather.yaml") == read_yaml(
                xdg_secrets / "weather.yaml"
            ), label
        assert (ours / "weather.wasm").exists() == (theirs / "weather.wasm").exists(), label
        if step[:2] == ("secret", "set"):
            listed = {
                s["key"]: s["value"]
                for s in json.loads(
                    ok(
                        env.run(
                            "secret",
                            "list",
                            "weather",
                            "--show-values",
                            "--yes",
                            "--component-dir",
                            str(ours),
                            "-o",
                            "json",
                        )
                    ).out
                )["secrets"]
            }
            shown = wassette.json(
                "secret",
                "list",
                "weather",
                "--show-values",
                "--yes",
                "--component-dir",
                str(theirs),
                "--output-format",
                "json",
            )
            assert (
                listed
                == {s["key"]: s["value"] for s in shown["secrets"]}
                == {"API_KEY": SECRET, "TOKEN": "xyz"}
            )
        compared += read_yaml(ours / "weather.policy.yaml") is not None
    assert compared == 12  # the policy existed (and agreed) after 12 of the steps
    # Wassette's unload keeps the secrets file; ours removes it (checked above)
    assert read_yaml(xdg_secrets / "weather.yaml") == {"API_KEY": SECRET}
    for leftover in ("wasm", "metadata.json", "policy.yaml", "policy.meta.json"):
        assert not (ours / f"weather.{leftover}").exists()
        assert not (theirs / f"weather.{leftover}").exists()


def test_secrets_dir_when_component_dir_follows_the_subcommand(env: Env, wassette: Any) -> None:
    """Wassette's quirk, measured: with `--component-dir` its `secret` commands write the XDG
    default secrets dir, not WASSETTE_SECRETS_DIR. Ours resolves the secrets dir the same way
    wherever `--component-dir` is (WASSETTE_SECRETS_DIR here)."""
    ok(env.run("component", "load", wasm(env)))
    d = ("--component-dir", str(env.component_dir))
    xdg_secrets = env.root / "xdg-config" / "wassette" / "secrets"
    assert wassette.environ()["WASSETTE_SECRETS_DIR"] == str(env.secrets_dir)

    wassette.ok("secret", "set", "weather", "THEIRS=1", *d)
    assert read_yaml(xdg_secrets / "weather.yaml") == {"THEIRS": "1"}
    assert not (env.secrets_dir / "weather.yaml").exists()

    ok(env.run("secret", "set", "weather", "OURS=1", *d))
    assert read_yaml(env.secrets_dir / "weather.yaml") == {"OURS": "1"}
    assert read_yaml(xdg_secrets / "weather.yaml") == {"THEIRS": "1"}
    # without --component-dir, Wassette reads WASSETTE_SECRETS_DIR like ours
    shown = wassette.json("secret", "list", "weather", "--show-values", "--yes")
    assert shown["secrets"] == [{"key": "OURS", "value": "1"}]


def test_repeated_access_adds_up(env: Env) -> None:
    ok(env.run("component", "load", wasm(env)))
    grant = ("permission", "grant", "storage", "weather")
    ok(env.run(*grant, "fs:///a", "--access", "read", "--access", "write"))
    ok(env.run(*grant, "fs:///b", "--access", "read,write"))
    ok(env.run(*grant, "fs:///c", "--access", "write", "--access", "read,write"))
    ok(env.run(*grant, "fs:///d", "--access", "read"))
    ok(env.run(*grant, "fs:///d", "--access", "write"))
    allow = yaml.safe_load((env.component_dir / "weather.policy.yaml").read_text())["permissions"][
        "storage"
    ]["allow"]
    assert allow == [{"uri": f"fs:///{u}", "access": ["read", "write"]} for u in "abcd"]
    ok(
        env.run(
            "permission",
            "revoke",
            "storage",
            "weather",
            "fs:///a",
            "--access",
            "write",
            "--access",
            "read",
        )
    )
    ok(env.run("permission", "revoke", "storage", "weather", "fs:///b", "--access", "write"))
    allow = yaml.safe_load((env.component_dir / "weather.policy.yaml").read_text())["permissions"][
        "storage"
    ]["allow"]
    assert allow[0] == {"uri": "fs:///b", "access": ["read"]}
    changes = [
        e["data"]["change"]
        for e in json.loads(ok(env.run("history", "--type", "policy.", "-o", "json")).out)
    ]
    assert changes[0] == {
        "op": "grant",
        "kind": "storage",
        "uri": "fs:///a",
        "access": ["read", "write"],
    }


# ------------------------------------------------------------------ secret list --show-values --yes


def test_show_values_with_yes_and_without_a_terminal(site: Env) -> None:
    def values(*extra: str) -> dict[str, str]:
        out = ok(site.run("secret", "list", "weather", "--show-values", *extra, "-o", "json")).out
        return {s["key"]: s["value"] for s in json.loads(out)["secrets"]}

    assert values("--yes") == values("-y") == values() == {"API_KEY": SECRET}
    # --yes alone is accepted and shows nothing (as in Wassette)
    hidden = json.loads(ok(site.run("secret", "list", "weather", "--yes", "-o", "json")).out)
    assert hidden["secrets"] == [{"key": "API_KEY", "declared": True, "has_value": True}]


def test_show_values_asks_on_a_terminal(site: Env) -> None:
    code, out = run_on_tty(site, "secret", "list", "weather", "--show-values", answer="n")
    assert code == 2, out
    assert "Show secret values? [y/N]" in out and "Error: cancelled; no values shown" in out
    assert SECRET not in out

    code, out = run_on_tty(site, "secret", "list", "weather", "--show-values", answer="y")
    assert code == 0 and "Show secret values? [y/N]" in out and SECRET in out, out

    code, out = run_on_tty(site, "secret", "list", "weather", "--show-values", "--yes")
    assert code == 0 and "Show secret values" not in out and SECRET in out, out

    code, out = run_on_tty(site, "secret", "list", "weather")
    assert code == 0 and "Show secret values" not in out and SECRET not in out, out


def test_wassette_declines_to_show_values_without_a_terminal(env: Env, wassette: Any) -> None:
    """What ours departs from: Wassette asks even with no terminal, reads EOF, prints
    'Cancelled.' on stdout and exits 0 without the values."""
    ok(env.run("component", "load", wasm(env)))
    ok(env.run("secret", "set", "weather", f"API_KEY={SECRET}"))
    res = wassette.ok("secret", "list", "weather", "--show-values")
    assert "Cancelled." in res.out and SECRET not in res.text
    assert SECRET in wassette.ok("secret", "list", "weather", "--show-values", "--yes").out


# ------------------------------------------------------------------ refusals


D = "{dir}"
BAD: list[tuple[tuple[str, ...], str]] = [
    (("component", "list", "--component-dir"), "requires an argument"),
    (("component", "list", "-o", "xml"), "'xml' is not one of"),
    (("component", "list", "--output-format", "csv"), "'csv' is not one of"),
    (("--output-format", "xml", "component", "list"), "'xml' is not one of"),
    (("component", "load", "file:///nonexistent/x.wasm", "--component-dir", D), "not found"),
    (("component", "unload", "nope", "--component-dir", D), "unknown component 'nope'"),
    (("component", "unload", "../etc", "--component-dir", D), "invalid id"),
    (("policy", "get", "nope", "--component-dir", D), "unknown component 'nope'"),
    (("policy", "get", "bare", "--component-dir", D, "-o", "table"), "has no policy"),
    (("permission", "grant", "storage", "weather", "fs:///x", "--component-dir", D), "access"),
    (("permission", "grant", "storage", "weather", "fs:///x", "--access", "exec"), "access"),
    (
        (
            "permission",
            "grant",
            "storage",
            "weather",
            "fs:///x",
            "--access",
            "read",
            "--access",
            "exec",
        ),
        "access",
    ),
    (("permission", "grant", "storage", "weather", "fs:///x", "--access", ""), "access"),
    (("permission", "grant", "storage", "weather", "fs:///x", "--access", ","), "access"),
    (("permission", "grant", "storage", "weather", "fs:///x", "--access"), "requires an argument"),
    (
        ("permission", "grant", "network", "weather", "a.example.com", "--access", "read"),
        "No such option",
    ),
    (("permission", "grant", "memory", "weather", "lots", "--component-dir", D), "memory"),
    (
        ("permission", "grant", "storage", "nope", "fs:///x", "--access", "read"),
        "unknown component",
    ),
    (
        ("permission", "revoke", "network", "weather", "never.example.com", "--component-dir", D),
        "not granted",
    ),
    (
        ("permission", "revoke", "storage", "weather", "fs:///never", "--component-dir", D),
        "not granted",
    ),
    (
        ("permission", "revoke", "environment-variable", "bare", "KEY", "--component-dir", D),
        "no policy",
    ),
    (("permission", "reset", "nope", "--component-dir", D), "unknown component"),
    (("secret", "set", "weather", "BAD", "--component-dir", D), "KEY=VALUE"),
    (("secret", "set", "weather", "--component-dir", D), "no secrets given"),
    (("secret", "set", "nope", "K=V", "--component-dir", D), "unknown component"),
    (("secret", "delete", "weather", "NOPE", "--component-dir", D), "has no secret 'NOPE'"),
    (("secret", "delete", "weather", "--component-dir", D), "no keys given"),
    (("secret", "list", "nope", "--component-dir", D), "unknown component"),
    (("secret", "list", "nope", "--show-values", "--yes", "-o", "table"), "unknown component"),
    (("export",), "Missing argument 'FILE'"),
    (("import", "missing.yaml"), "missing.yaml"),
    (("import", "missing.yaml", "--dry-run"), "missing.yaml"),
    (("history", "--since", "yesterday-ish"), "yesterday-ish"),
    (("history", "--component", "../etc"), "invalid id"),
    (("show", "--at", "tag:never"), "never"),
    (("diff",), "Missing argument"),
    (("diff", "tag:never"), "never"),
    (("blame", "../etc"), "invalid id"),
    (("rollback",), "Missing option '--to'"),
    (("rollback", "--to", "not-a-time", "--yes"), "not-a-time"),
    (("tag", "x", "--at", "whenever"), "whenever"),
    (("tags", "extra"), "unexpected extra argument"),
    (("verify", "-o", "xml"), "'xml' is not one of"),
    (("sync", "--component-dir", D), "No such option"),
]


@pytest.fixture(scope="module")
def bad_site(tmp_path_factory: pytest.TempPathFactory) -> Env:
    env = Env(tmp_path_factory.mktemp("bad"))
    build(env)
    return env


@pytest.mark.parametrize(("args", "contains"), BAD, ids=[ascii(" ".join(b[0])) for b in BAD])
def test_bad_input_is_one_error_line_and_changes_nothing(
    bad_site: Env, args: tuple[str, ...], contains: str
) -> None:
    argv = [str(bad_site.component_dir) if a == D else a for a in args]
    before = tree_bytes(bad_site.root)
    res: Result = bad_site.run(*argv)
    assert_refused(bad_site, res, code=2, contains=contains)
    assert res.out == ""
    assert SECRET not in res.text
    assert tree_bytes(bad_site.root) == before
