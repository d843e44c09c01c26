"""Secret values never leave the secrets file: not into the database (or its WAL), the blob store,
the component dir, an export, a log line, an error message or any output — except
`secret list --show-values`, whose job is to print them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests import wasm_fixtures as fx
from tests.conftest import Env, Result

ARGS_VALUE = "leak-ARGS-9d1f0c2e"  # set via arguments, later rotated away
GONE_VALUE = "leak-GONE-31aa07bd"  # set via arguments, later deleted
STDIN_VALUE = "leak-STDIN-4b7e2a19"  # set via --stdin
ROTATED_VALUE = "leak-ROTATED-77c3e1f0"  # the rotation of ARGS_VALUE's key
HAND_VALUE = "leak-HAND-0e6b5d24"  # written into the secrets file by hand, adopted by sync
REFUSED_VALUE = "leak-REFUSED-5a5a5a5a"  # only ever in refused commands
ALL = (ARGS_VALUE, GONE_VALUE, STDIN_VALUE, ROTATED_VALUE, REFUSED_VALUE, HAND_VALUE)
KEPT = (STDIN_VALUE, ROTATED_VALUE, HAND_VALUE)  # the values on disk at the end


def files_with(root: Path, needle: str) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle.encode() in p.read_bytes()
    )


def test_secret_values_never_leak(env: Env, env_factory: Callable[[str], Env]) -> None:
    inputs = env.root / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "weather.wasm", kind="weather")
    (inputs / "weather.policy.yaml").write_text('version: "1.0"\npermissions: {}\n')
    exports = env.root / "exports"
    exports.mkdir()

    outputs: list[tuple[tuple[str, ...], Result]] = []
    shown: list[str] = []

    def run(*args: str, code: int = 0, stdin: str | None = None, show: bool = False) -> Result:
        r = env.run("-v", *args, input=stdin)
        assert r.code == code, (args, r.code, r.out, r.err)
        assert "Traceback" not in r.text
        if show:
            shown.append(r.out)
            outputs.append((args, Result(r.code, "", r.err)))
        else:
            outputs.append((args, r))
        return r

    run(
        "component",
        "attach",
        str(inputs / "weather.wasm"),
        "--policy",
        str(inputs / "weather.policy.yaml"),
    )
    # Keep a reader open so the CLI's connections never delete the WAL: its bytes get checked.
    reader = sqlite3.connect(env.db)
    try:
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        r = run("secret", "set", "weather", f"API_KEY={ARGS_VALUE}", f"DB_PASS={GONE_VALUE}")
        assert "appended" in r.err  # -v really logs
        run("secret", "set", "weather", "--stdin", stdin=f"TOKEN={STDIN_VALUE}\n")
        run("secret", "list", "weather")
        run("secret", "list", "weather", "-o", "json")
        r = run("secret", "list", "weather", "--show-values", "-o", "json", show=True)
        assert {s["key"]: s["value"] for s in json.loads(r.out)["secrets"]} == {
            "API_KEY": ARGS_VALUE,
            "DB_PASS": GONE_VALUE,
            "TOKEN": STDIN_VALUE,
        }
        run("secret", "set", "weather", f"API_KEY={ROTATED_VALUE}")  # rotation
        run("secret", "delete", "weather", "DB_PASS")
        r = run("secret", "list", "weather", "--show-values", show=True)
        assert ROTATED_VALUE in r.out and STDIN_VALUE in r.out and ARGS_VALUE not in r.out
        # Refused commands that carry a value.
        run("secret", "set", "weather", f"1BAD={REFUSED_VALUE}", code=2)
        run("secret", "set", "weather", f"K={REFUSED_VALUE}", f"K={REFUSED_VALUE}", code=2)
        run("secret", "set", "ghost", f"K={REFUSED_VALUE}", code=2)
        run("secret", "set", "weather", "--stdin", stdin=f"A B={REFUSED_VALUE}\n", code=2)
        run("secret", "set", "weather", "--stdin", stdin=f"K={REFUSED_VALUE}\x00\n", code=2)
        # Everything that reads or writes the state.
        run("state", "history")
        run("state", "history", "-o", "json")
        run("state", "show", "-o", "yaml")
        run("state", "diff", "seq:0")
        run("state", "blame", "weather")
        run("component", "list", "-o", "json")
        run("component", "inspect", "weather", "-o", "json")
        run("state", "export", str(exports / "state.json"))
        run("state", "export", "-")
        # Drift: a key added to the secrets file by hand; sync records its name only.
        with (env.secrets_dir / "weather.yaml").open("a") as f:
            f.write(f"HAND_KEY: {HAND_VALUE}\n")
        r = run("state", "sync", "-o", "json")
        assert "HAND_KEY" in r.out
        run("state", "verify")

        # Another store imports the export: it learns key names, never values.
        other = env_factory("other")
        r = other.run("-v", "state", "import", str(exports / "state.json"))
        assert r.code == 0, (r.out, r.err)
        assert "TOKEN" in r.text  # the keys that still need values are listed
        outputs.append((("import",), r))

        tree = {p for p in env.root.rglob("*") if p.is_file()}
        assert env.db.with_name("state.db-wal") in tree

        secrets_file = env.secrets_dir / "weather.yaml"
        on_disk = secrets_file.read_text()
        assert ROTATED_VALUE in on_disk and STDIN_VALUE in on_disk

        for value in ALL:
            for args, r in outputs:
                assert value not in r.out, (value, args)
                assert value not in r.err, (value, args)
            for root in (env.root, other.root):
                found = files_with(root, value)
                allowed = [str(secrets_file.relative_to(env.root))] if value in KEPT else []
                assert found == (allowed if root == env.root else []), (value, found)
        # The show-values output did carry them (so the checks above could have failed).
        assert all(any(v in out for out in shown) for v in (STDIN_VALUE, ROTATED_VALUE))
        assert HAND_VALUE in on_disk
        # The database and its WAL really were scanned, with key names in them.
        wal = env.db.with_name("state.db-wal")
        assert wal.is_file() and b"TOKEN" in env.db.read_bytes() + wal.read_bytes()
    finally:
        reader.close()
