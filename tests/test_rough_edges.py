"""A new user's rough edges (issue 14): help without a subcommand, confirmations without a
terminal, Ctrl-C after a commit, YAML on stdout and by content, policy diffs with their rules,
the command line as typed, tables sized to the terminal and safe from escape sequences, the
database's mode, `history -o json` streamed, `env unset` of many keys, and `..` in storage URIs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import (
    Env,
    assert_refused,
    cli_history,
    ok,
    run_on_tty,
    tree_bytes,
    wassette_exe,
)

SECRET = "rough-edge-secret-value"


def wasm(env: Env, name: str = "weather", kind: str = "weather") -> Path:
    src = env.root / "inputs" / f"{name}.wasm"
    src.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(src, kind=kind)
    return src


def width(text: str) -> int:
    """Display columns of text on a terminal."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


# ------------------------------------------------------------------ help without a subcommand


@pytest.mark.parametrize("args", [(), ("state",), ("secret",), ("env",)])
def test_no_subcommand_prints_the_help_as_help(env: Env, args: tuple[str, ...]) -> None:
    res = env.run(*args)
    assert res.code == 2, res
    assert "Traceback" not in res.text
    assert not res.err.startswith("Error:"), res.err
    lines = res.err.splitlines()
    assert lines[0].startswith("Usage: wassette-state"), lines[:3]
    assert "Commands:" in lines and len(lines) > 8, res.err
    assert not env.db.exists()


# ------------------------------------------------------------------ confirmations


def built(env: Env) -> None:
    """tx 1: weather; tx 2: a grant; tx 3: a secret key with a value on disk."""
    ok(env.run("component", "attach", str(wasm(env))))
    ok(env.run("permission", "grant", "network", "weather", "api.example.com"))
    ok(env.run("secret", "set", "weather", "--stdin", input=f"API_KEY={SECRET}\n"))


def snapshot_without_weather(env: Env) -> Path:
    """A state file of the store before weather (an env var only)."""
    target = env.root / "inputs" / "before.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    ok(env.run("env", "set", "MODE=prod"))
    ok(env.run("state", "export", str(target)))
    return target


@pytest.mark.parametrize(
    "args",
    [
        ("state", "rollback", "--to", "tx:1"),
        ("rollback", "--to", "tx:1"),
        ("state", "undo"),
        ("undo",),
        ("state", "import", "{file}", "--prune"),
        ("import", "{file}", "--prune", "-o", "json"),
    ],
)
def test_without_a_terminal_destructive_commands_need_yes(env: Env, args: tuple[str, ...]) -> None:
    target = snapshot_without_weather(env)
    built(env)
    argv = [str(target) if a == "{file}" else a for a in args]
    before = tree_bytes(env.root)
    res = env.run(*argv)
    assert_refused(env, res, 2, "--yes")
    assert "terminal" in res.err
    assert tree_bytes(env.root) == before

    # --dry-run needs no --yes and writes nothing
    dry = ok(env.run(*argv, "--dry-run"))
    assert "dry run" in dry.out or '"dry_run": true' in dry.out
    assert tree_bytes(env.root) == before

    # --yes applies
    head = cli_history(env)[-1]["tx"]
    ok(env.run(*argv, "--yes"))
    assert cli_history(env)[-1]["tx"] == head + 1


def test_import_without_prune_needs_no_yes(env: Env) -> None:
    target = snapshot_without_weather(env)
    built(env)
    ok(env.run("env", "set", "MODE=dev"))
    ok(env.run("import", str(target)))
    assert json.loads(ok(env.run("env", "list", "-o", "json")).out) == {"MODE": "prod"}


def test_on_a_terminal_they_ask(env: Env) -> None:
    target = snapshot_without_weather(env)
    built(env)
    before = tree_bytes(env.root)
    for args in (("rollback", "--to", "tx:1"), ("undo",), ("import", str(target), "--prune")):
        code, out = run_on_tty(env, *args, answer="n")
        assert code == 2, out
        assert "[y/N]" in out and "cancelled; nothing was changed" in out, out
        assert tree_bytes(env.root) == before
    head = cli_history(env)[-1]["tx"]
    code, out = run_on_tty(env, "import", str(target), "--prune", answer="y")
    assert code == 0, out
    assert "detach weather" in out
    assert cli_history(env)[-1]["tx"] == head + 1


def test_ctrl_c_after_the_commit_reports_the_transaction(env: Env) -> None:
    """Ctrl-C while the secrets file is put in place after the import committed: exit 130,
    and the message names the recorded transaction (not 'aborted', exit 1)."""
    target = snapshot_without_weather(env)
    built(env)
    head = cli_history(env)[-1]["tx"]
    res = env.run(
        "import",
        str(target),
        "--prune",
        "--yes",
        extra_env={"WASSETTE_STATE_FAULT": "commit.after:sigint"},
    )
    assert res.code == 130, res
    assert "Traceback" not in res.text
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted"), res.err
    assert f"tx {head + 1}" in lines[0] and "recorded" in lines[0], lines
    assert cli_history(env)[-1]["tx"] == head + 1
    # The next command finishes: the value left the file Wassette reads.
    ok(env.run("state", "verify"))
    assert SECRET not in "".join(p.read_text() for p in env.secrets_dir.glob("*.yaml"))


def test_ctrl_c_before_anything_is_recorded_says_so(env: Env) -> None:
    built(env)
    before = tree_bytes(env.root)
    res = env.run(
        "state",
        "rollback",
        "--to",
        "tx:1",
        "--yes",
        extra_env={"WASSETTE_STATE_FAULT": "commit.before:sigint"},
    )
    assert res.code == 130, res
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert lines == ["Error: interrupted; nothing was recorded"], res.err
    assert tree_bytes(env.root) == before


# ------------------------------------------------------------------ YAML out, YAML in


def test_export_yaml_to_stdout(env: Env) -> None:
    built(env)
    as_json = json.loads(ok(env.run("export", "-")).out)
    out = ok(env.run("export", "-", "--yaml")).out
    assert not out.lstrip().startswith("{")
    as_yaml = yaml.safe_load(out)
    for doc in (as_json, as_yaml):
        doc.pop("exported_at")
    assert as_yaml == as_json
    # and JSON whatever the name says
    named = env.root / "inputs" / "state.yaml"
    ok(env.run("export", str(named), "--json"))
    assert named.read_text().lstrip().startswith("{")


def test_import_reads_yaml_whatever_the_name(env: Env) -> None:
    built(env)
    src = env.root / "inputs" / "state.yaml"
    ok(env.run("export", str(src)))
    odd = env.root / "inputs" / "state.txt"
    odd.write_bytes(src.read_bytes())
    other = env.root / "other"
    other.mkdir()
    fresh = Env(other)
    ok(fresh.run("env", "set", "A=1"))
    res = ok(fresh.run("import", str(odd), "--dry-run"))
    assert "attach weather" in res.out
    # JSON named .txt still reads as JSON
    js = env.root / "inputs" / "state-json.txt"
    ok(env.run("export", str(js)))
    assert "attach weather" in ok(fresh.run("import", str(js), "--dry-run")).out
    ok(fresh.run("import", str(odd)))
    assert "weather" in ok(fresh.run("component", "list")).out
    # a broken YAML file named .txt is called YAML
    bad = env.root / "inputs" / "bad.txt"
    bad.write_text("version: [1, 2\n")
    assert_refused(fresh, fresh.run("import", str(bad)), 2, "invalid YAML")


# ------------------------------------------------------------------ policy diffs


def test_diff_of_two_policies_shows_the_rules(env: Env) -> None:
    built(env)
    ok(env.run("permission", "grant", "storage", "weather", "fs:///data", "--access", "read"))
    ok(env.run("permission", "revoke", "network", "weather", "api.example.com"))
    res = ok(env.run("state", "diff", "tx:2"))
    lines = res.out.splitlines()
    rule_rows = [ln for ln in lines if "policy rule" in ln]
    assert len(rule_rows) == 2, res.out
    added = next(ln for ln in rule_rows if "storage" in ln)
    removed = next(ln for ln in rule_rows if "network" in ln)
    assert "allow storage uri=fs:///data access=read" in added
    assert "allow network host=api.example.com" in removed
    # added: before '-', after the rule; removed: the other way round
    assert added.split()[3] == "-" and removed.split()[-1] == "-", res.out

    changes = json.loads(ok(env.run("state", "diff", "tx:2", "-o", "json")).out)
    policy = [c for c in changes if c["field"] == "policy"]
    assert len(policy) == 1
    p = policy[0]
    assert set(p) >= {"component_id", "field", "before", "after"}
    assert p["rules_added"] == ["allow storage uri=fs:///data access=read"]
    assert p["rules_removed"] == ["allow network host=api.example.com"]
    assert p["before"]["policy_content"] != p["after"]["policy_content"]
    others = [c for c in changes if c["field"] != "policy"]
    assert all("rules_added" not in c for c in others)


# ------------------------------------------------------------------ the command as typed


def test_the_recorded_command_is_the_one_typed(env: Env) -> None:
    policy = env.root / "inputs" / "p.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text('version: "1.0"\npermissions:\n  network:\n    allow:\n      - host: a.com\n')
    src = wasm(env)
    ok(env.run("component", "attach", str(src), "--policy", str(policy), "--id", "weather"))
    ok(env.run("--db", str(env.db), "state", "tag", "v1"))
    ok(env.run("secret", "set", "weather", f"API_KEY={SECRET}", f"TOKEN={SECRET}-2"))
    ok(env.run("env", "set", "PASSWORD=stored-in-clear", "MODE=dev"))
    ok(env.run("rollback", "--to", "tag:v1", "--reason", "why not", "--yes", "-o", "json"))
    commands = [e["command"] for e in cli_history(env)]
    assert commands[0] == f"component attach {src} --policy {policy} --id weather"
    assert "secret set weather API_KEY TOKEN" in commands
    assert "env set PASSWORD MODE" in commands
    assert commands[-1] == "rollback --to tag:v1 --reason 'why not' --yes -o json"
    assert not any(SECRET in c or "stored-in-clear" in c for c in commands)
    for p in env.root.glob("state.db*"):
        assert SECRET.encode() not in p.read_bytes(), p


def test_undo_records_what_it_undid(env: Env) -> None:
    built(env)
    ok(env.run("undo", "--yes"))
    assert cli_history(env)[-1]["command"] == "undo --yes (tx 3)"


# ------------------------------------------------------------------ tables


def test_tables_are_not_clipped_without_a_terminal(env: Env) -> None:
    long = "v" * 150
    ok(env.run("env", "set", f"LONG={long}"))
    assert long in ok(env.run("history")).out
    assert long in ok(env.run("env", "list")).out
    longer = "w" * 400
    ok(env.run("env", "set", f"LONG={longer}"))
    assert longer in ok(env.run("env", "list")).out


def test_tables_fit_the_terminal(env: Env) -> None:
    ok(env.run("env", "set", f"LONG={'v' * 300}", "SHORT=x"))
    for columns in (80, 120):
        code, out = run_on_tty(env, "history", columns=columns)
        assert code == 0, out
        rows = [ln for ln in out.splitlines() if ln.strip()]
        assert len(rows) == 4 and all(width(ln) <= columns for ln in rows), out
        assert "…" in out and "SHORT=x" in out
        code, out = run_on_tty(env, "env", "list", columns=columns)
        assert code == 0 and all(width(ln) <= columns for ln in out.splitlines()), out


def test_wide_characters_stay_aligned(env: Env) -> None:
    for actor in ("用户@东京", "bob@x", "😀@emoji", "e\u0301@combining"):
        ok(env.run("env", "set", f"BY={actor}", actor=actor))
    for args in (("history",), ("history", "--reverse")):
        rows = ok(env.run(*args)).out.splitlines()
        header_start = width(rows[0][: rows[0].index("KIND")])
        starts = {width(ln[: ln.index("change")]) for ln in rows[1:]}
        assert starts == {header_start}, "\n".join(rows)


ESC_ACTOR = "\x1b]0;pwned\x07mallory\x1b[2J"
ESC_VALUE = "red\x1b[31m!\x1b[0m\x9b6n\x7f"


def test_escape_sequences_are_never_printed_raw(env: Env) -> None:
    ok(env.run("env", "set", f"COLOR={ESC_VALUE}", actor=ESC_ACTOR))
    raw = ("\x1b", "\x07", "\x9b", "\x7f")
    for args in (("history",), ("env", "list"), ("show",), ("diff", "seq:0"), ("tags",)):
        res = ok(env.run(*args))
        assert not any(c in res.text for c in raw), (args, res.text)
    shown = ok(env.run("env", "list")).out
    assert "red\\x1b[31m!\\x1b[0m\\x9b6n\\x7f" in shown
    assert "\\x1b]0;pwned\\x07mallory" in ok(env.run("history")).out
    for fmt in ("json", "yaml"):
        res = ok(env.run("history", "-o", fmt))
        assert not any(c in res.out for c in raw), res.out
        loaded = json.loads(res.out) if fmt == "json" else yaml.safe_load(res.out)
        assert {e["actor"] for e in loaded} == {ESC_ACTOR}
        assert loaded[-1]["data"]["value"] == ESC_VALUE
    # on a terminal too
    code, out = run_on_tty(env, "history")
    assert code == 0 and not any(c in out for c in raw), repr(out)
    # and in messages
    res = env.run("import", str(env.root / "\x1b[31mmissing.json"))
    assert_refused(env, res, 2, "not found")
    assert "\x1b" not in res.err and "\\x1b[31mmissing.json" in res.err


# ------------------------------------------------------------------ the database's mode


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_database_is_private_whatever_the_umask(env: Env, umask: int) -> None:
    db = env.root / "new" / "data" / "state.db"
    old = os.umask(umask)
    try:
        res = env.run("--db", str(db), "env", "set", "A=1")
        holder = subprocess.Popen(  # a reader keeps the -wal and -shm files alive
            [wassette_exe(), "--db", str(db), "history", "-o", "json"],
            env=env.environ(),
            stdout=subprocess.PIPE,
        )
        holder.communicate(timeout=60)
    finally:
        os.umask(old)
    ok(res)
    assert db.stat().st_mode & 0o777 == 0o600
    for p in db.parent.glob("state.db*"):
        assert p.stat().st_mode & 0o777 == 0o600, p
    assert db.parent.stat().st_mode & 0o777 == 0o700
    assert (env.root / "new").stat().st_mode & 0o777 == 0o700


def test_wal_files_follow_the_database(env: Env) -> None:
    import sqlite3

    ok(env.run("env", "set", "A=1"))
    conn = sqlite3.connect(env.db)  # keeps -wal/-shm while it is open
    try:
        conn.execute("SELECT count(*) FROM events").fetchone()
        ok(env.run("env", "set", "B=2"))
        for suffix in ("", "-wal", "-shm"):
            p = env.db.with_name(env.db.name + suffix)
            assert p.exists() and p.stat().st_mode & 0o777 == 0o600, p
    finally:
        conn.close()


# ------------------------------------------------------------------ history -o json, streamed


def many_large_events(env: Env, count: int, size: int) -> None:
    """`count` env.set events of `size` bytes each, made through the library in a separate
    process (this one stays small)."""
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        from wassette_state.store.usecases.commands import env_set
        from wassette_state.store.files.config import resolve
        from wassette_state.store.usecases.service import Store

        store = Store(resolve({str(env.db)!r}, {str(env.component_dir)!r},
                              {str(env.secrets_dir)!r}, "tester@test"))
        for start in range(0, {count}, 200):
            batch = range(start, min(start + 200, {count}))
            env_set(store, {{f"K{{i:05d}}": f"{{i:05d}}" + "x" * {size} for i in batch}})
        store.close()
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env.environ(), timeout=600)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM; a new program starts its own)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def test_history_json_streams_in_constant_memory(env: Env) -> None:
    many_large_events(env, 1000, 100_000)  # 100 MB of event data
    proc = subprocess.Popen(
        [wassette_exe(), "history", "-o", "json"],
        env=env.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    size = 0
    tail = b""
    peak = 0.0
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
        tail = (tail + chunk)[-64:]
        peak = max(peak, peak_rss_mb(proc.pid))
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert size > 100_000_000 and tail.endswith(b"}\n]\n")
    assert 0 < peak < 120, f"peak RSS {peak:.0f} MB for {size / 1e6:.0f} MB of output"


def test_history_json_is_the_same_document(env: Env) -> None:
    ok(env.run("env", "set", "A=1", "B=2"))
    ok(env.run("env", "unset", "A"))
    import wassette_state.cli.main  # noqa: F401  (the CLI modules load in this order)
    from tests.conftest import all_events
    from wassette_state.cli.state import event_json

    expected = [event_json(se) for se in all_events(env)]
    out = ok(env.run("history", "-o", "json")).out
    assert out == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    assert (
        json.loads(ok(env.run("history", "-o", "json", "--reverse", "--limit", "2")).out)
        == (expected[::-1][:2])
    )
    assert yaml.safe_load(ok(env.run("history", "-o", "yaml")).out) == expected
    empty = Env(env.root / "empty")
    empty.root.mkdir()
    ok(empty.run("env", "set", "A=1"))
    assert ok(empty.run("history", "-o", "json", "--type", "component.")).out == "[]\n"
    assert yaml.safe_load(ok(empty.run("history", "-o", "yaml", "--type", "x")).out) == []


PAGED: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    ((), {}),
    (("--limit", "100"), {"limit": 100}),
    (("--reverse",), {"reverse": True}),
    (("--reverse", "--limit", "70"), {"reverse": True, "limit": 70}),
    (("--since", "seq:10", "--until", "seq:140"), {"from_seq": 11, "to_seq": 140}),
    (
        ("--since", "seq:10", "--until", "seq:140", "--reverse", "--limit", "129"),
        {"from_seq": 11, "to_seq": 140, "reverse": True, "limit": 129},
    ),
    (("--type", "env.unset"), {"type_prefix": "env.unset"}),
    (
        ("--type", "env.set", "--reverse", "--limit", "65"),
        {"type_prefix": "env.set", "reverse": True, "limit": 65},
    ),
    (("--tx", "2"), {"tx_id": 2}),
]


@pytest.mark.parametrize(("args", "query"), PAGED)
def test_history_pages_read_what_one_query_read(
    env: Env, args: tuple[str, ...], query: dict[str, Any]
) -> None:
    """Across page boundaries (64 events): the same events, order and limit as one read."""
    import wassette_state.cli.main  # noqa: F401  (the CLI modules load in this order)
    from tests.conftest import opened
    from wassette_state.cli.state import HISTORY_PAGE, _pages, event_json
    from wassette_state.store.persistence import log
    from wassette_state.store.persistence.log import Query

    ok(env.run("env", "set", *(f"K{i}={i}" for i in range(150))))
    ok(env.run("env", "unset", *(f"K{i}" for i in range(0, 150, 2))))
    assert HISTORY_PAGE < 65
    got = json.loads(ok(env.run("history", "-o", "json", *args)).out)
    q = Query(**query)
    with opened(env) as store, store.reading() as conn:
        expected = [event_json(se) for se in log.read(conn, q)]
        assert [se.seq for se in _pages(conn, q)] == [e["seq"] for e in expected]
    assert got == expected and len(expected) > 64


def test_a_failed_write_is_no_success(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [wassette_exe(), "history", "-o", "json"],
            env=env.environ(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write the output"), lines
    assert "No space left on device" in lines[0]


@pytest.mark.parametrize("output", ["json", "text"])
def test_a_broken_pipe_is_no_success_and_no_traceback(env: Env, output: str) -> None:
    """`| head -c 100` on more than a pipe holds: the streamed JSON, and a table written in
    one go (Python's stdout dropped the rest of that write silently: exit 0)."""
    if output == "json":
        many_large_events(env, 200, 10_000)
    else:
        ok(env.run("env", "set", *(f"KEY_{i}=value-{i}" for i in range(2000))))
    proc = subprocess.Popen(
        [wassette_exe(), "history", "-o", output],
        env=env.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert code == 128 + signal.SIGPIPE, (code, err)
    assert err == "", err


# ------------------------------------------------------------------ env unset of many keys


def test_env_unset_of_many_keys_is_one_decision(env: Env) -> None:
    keys = [f"K{i}" for i in range(1500)]
    start = time.perf_counter()
    ok(env.run("env", "set", *(f"{k}=v" for k in keys)))
    set_seconds = time.perf_counter() - start
    start = time.perf_counter()
    res = ok(env.run("env", "unset", *keys))
    unset_seconds = time.perf_counter() - start
    assert "tx 2, 1500 events" in res.out
    assert unset_seconds < 3 * set_seconds + 2, (set_seconds, unset_seconds)
    assert json.loads(ok(env.run("env", "list", "-o", "json")).out) == {}
    # one key missing: refused, nothing unset
    ok(env.run("env", "set", "A=1"))
    before = tree_bytes(env.root)
    assert_refused(env, env.run("env", "unset", "A", "NOPE"), 2, "'NOPE' is not set")
    assert tree_bytes(env.root) == before


# ------------------------------------------------------------------ `..` in storage URIs


DOTDOT = ["fs:///data/../etc", "fs://../secret", "fs:///data/..", "fs:///a/%2e%2E/b", "../x"]


@pytest.mark.parametrize("uri", DOTDOT)
def test_storage_uris_with_dot_dot_are_refused(uri: str) -> None:
    from wassette_state.store.domain.errors import ValidationError
    from wassette_state.store.domain.policy_edit import grant
    from wassette_state.store.domain.policy_text import parse_policy

    text = (
        'version: "1.0"\npermissions:\n  storage:\n    allow:\n'
        f"      - uri: {json.dumps(uri)}\n        access: [read]\n"
    )
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        parse_policy(text)
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        grant(None, "weather", "storage", uri, ["read"])


@pytest.mark.parametrize("uri", ["fs:///data/..x/y", "fs:///data/x..", "fs:///a/./b", "fs:///**"])
def test_dots_that_are_no_parent_segment_pass(uri: str) -> None:
    from wassette_state.store.domain.policy_edit import grant

    grant(None, "weather", "storage", uri, ["read"])


def test_dot_dot_refused_through_the_cli(env: Env) -> None:
    ok(env.run("component", "attach", str(wasm(env))))
    bad = env.root / "inputs" / "bad.yaml"
    bad.write_text(
        'version: "1.0"\npermissions:\n  storage:\n    allow:\n'
        '      - uri: "fs:///srv/../../root"\n        access: [read, write]\n'
    )
    before = tree_bytes(env.root)
    res = env.run(
        "permission", "grant", "storage", "weather", "fs:///data/../etc", "--access", "read"
    )
    assert_refused(env, res, 2, "'..'")
    assert_refused(env, env.run("policy", "attach", "weather", str(bad)), 2, "'..'")
    assert tree_bytes(env.root) == before
