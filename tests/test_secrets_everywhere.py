"""Secret values never leave the secrets dir: not into the database (WAL and SHM included), an
export, a log line, an error, the blob store, the cache, the marker, the component dir, or the
output of any command run with `-v`. Exports and the secrets dir keep their modes even under
`umask 000`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import Env, Result, wassette_exe
from wassette_state.store.files import secrets as secret_files

POLICY = 'version: "1.0"\npermissions:\n  network:\n    allow:\n    - host: api.example.com\n'

# Distinctive values (one non-ASCII, one with YAML/JSON specials) that cannot appear by chance.
SECRETS = {
    "s1": "S1-0f9e8d7c6b5a-first-api-key",
    "s2": "S2-stdin-token-4b3a2918",
    "s3": "S3-pässwörd-✓-77aa",
    "s4": 'S4-rotated: "quoted" #hash 5c5c',
    "s5": "S5-added-by-hand-e1e2e3",
}


def forms(value: str) -> list[bytes]:
    """The byte forms a leaked value could take: raw UTF-8 and JSON/YAML escaped."""
    out = {
        value.encode(),
        json.dumps(value).encode()[1:-1],
        json.dumps(value, ensure_ascii=False).encode()[1:-1],
    }
    return sorted(out)


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM events").fetchone()
print("ready", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


@contextmanager
def hold_read_transaction(db: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class Recorder:
    """Runs commands with -v, keeps every byte of output and every file version seen."""

    def __init__(self, *envs: Env) -> None:
        self.envs = envs
        self.outputs: list[tuple[str, bytes]] = []
        self.files: dict[str, set[bytes]] = {}

    def run(self, env: Env, *args: str, input: str | None = None, code: int = 0) -> Result:
        r = env.run("-v", *args, input=input)
        self.outputs.append((" ".join(args) + " [stdout]", r.out.encode()))
        self.outputs.append((" ".join(args) + " [stderr]", r.err.encode()))
        assert r.code == code, (args, r.code, r.out, r.err)
        assert "Traceback" not in r.text
        self.capture()
        return r

    def capture(self) -> None:
        for env in self.envs:
            secret_files_now = {
                secret_files.secrets_file(env.secrets_dir, cid) for cid in ("weather", "d", "c")
            }
            for p in env.root.rglob("*"):
                if p.is_symlink() or not p.is_file() or p in secret_files_now:
                    continue
                try:
                    data = p.read_bytes()
                except FileNotFoundError:  # a -wal/-shm that went away meanwhile
                    continue
                self.files.setdefault(str(p), set()).add(data)

    def leaks(self) -> list[str]:
        found = []
        for name, value in SECRETS.items():
            for form in forms(value):
                for label, data in self.outputs:
                    if form in data:
                        found.append(f"{name} in the output of `{label}`")
                for path, versions in self.files.items():
                    if any(form in v for v in versions):
                        found.append(f"{name} in {path}")
        return sorted(set(found))


@pytest.mark.slow
def test_no_secret_value_anywhere(env_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a: Env = env_factory("a")
    b: Env = env_factory("b")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "weather.wasm", kind="weather")
    fx.write_component(inputs / "d.wasm", kind="simple")
    (inputs / "policy.yaml").write_text(POLICY)
    rec = Recorder(a, b)

    rec.run(
        a,
        "component",
        "attach",
        str(inputs / "weather.wasm"),
        "--policy",
        str(inputs / "policy.yaml"),
    )
    # A read transaction held open by another process: nothing can checkpoint past it or
    # delete the WAL, so every frame written during the scenario stays in the -wal file that
    # capture() reads. (Another process, because reading the database file here would drop
    # this process's POSIX locks on it.)
    with hold_read_transaction(a.db):
        rec.run(a, "component", "attach", str(inputs / "d.wasm"))
        rec.run(a, "secret", "set", "weather", f"API_KEY={SECRETS['s1']}")
        rec.run(
            a,
            "secret",
            "set",
            "d",
            "--stdin",
            input=f"TOKEN={SECRETS['s2']}\n# comment\nOTHER={SECRETS['s3']}\n",
        )
        rec.run(a, "state", "tag", "with-secrets")
        rec.run(a, "secret", "set", "weather", f"API_KEY={SECRETS['s4']}")  # rotation
        rec.run(a, "secret", "list", "weather")
        rec.run(a, "secret", "list", "d", "-o", "json")
        rec.run(a, "env", "set", "LOG_LEVEL=debug")
        rec.run(a, "permission", "grant", "network", "d", "api.d.example.com")
        rec.run(a, "state", "export", str(tmp_path / "out.json"))
        rec.run(a, "state", "export", str(tmp_path / "out.yaml"))
        rec.run(a, "state", "export", "-")
        rec.run(a, "state", "show", "-o", "yaml")
        rec.run(a, "state", "diff", "seq:1")
        rec.run(a, "state", "blame", "weather", "-o", "json")
        rec.run(a, "component", "inspect", "weather", "-o", "json")
        rec.run(a, "component", "list", "-o", "json")
        # Import elsewhere (the wasm comes from its source file), both formats, then dry runs.
        rec.run(b, "state", "import", str(tmp_path / "out.json"))
        rec.run(b, "state", "import", str(tmp_path / "out.yaml"), "--dry-run")
        rec.run(b, "state", "import", str(tmp_path / "out.yaml"), "--prune", "--yes")
        rec.run(b, "secret", "list", "weather")
        # Roll back, undo, delete, a key added by hand and adopted by sync.
        rec.run(a, "state", "rollback", "--to", "tag:with-secrets", "--yes")
        rec.run(a, "state", "undo", "--yes")
        rec.run(a, "secret", "delete", "d", "OTHER")
        hand = secret_files.secrets_file(a.secrets_dir, "d")
        hand.write_text(hand.read_text() + f"BY_HAND: {SECRETS['s5']}\n")
        rec.run(a, "state", "sync")
        rec.run(a, "state", "verify")
        rec.run(a, "state", "history", "-o", "json")
        rec.run(a, "state", "history")
        rec.run(a, "state", "export", str(tmp_path / "out2.json"))
        # Refusals must not echo values either.
        rec.run(a, "secret", "set", "nope", f"K={SECRETS['s1']}", code=2)
        rec.run(a, "secret", "set", "weather", f"1BAD={SECRETS['s2']}", code=2)
        rec.run(a, "env", "set", f"BAD KEY={SECRETS['s3']}", code=2)
        rec.run(
            a, "secret", "set", "weather", "--stdin", input=f"no-equals {SECRETS['s4']}\n", code=2
        )
        assert (a.db.parent / "state.db-wal").exists(), "the WAL was not kept for inspection"
    rec.capture()
    for name in ("out.json", "out.yaml", "out2.json"):
        rec.files.setdefault(name, set()).add((tmp_path / name).read_bytes())

    # The values are where they belong (so the search above looked for the right bytes).
    values = secret_files.read_values(a.secrets_dir, "weather")
    assert values == {"API_KEY": SECRETS["s4"]}
    assert secret_files.read_values(a.secrets_dir, "d")["TOKEN"] == SECRETS["s2"]
    kinds = {Path(p).name for p in rec.files}
    assert {"state.db", "state.db-wal", "materialized.json"} <= kinds, sorted(kinds)
    assert any("/blobs/" in p for p in rec.files) and any("/cache/" in p for p in rec.files)
    assert any(p.endswith(".metadata.json") for p in rec.files)

    # Positive control: the search finds a value where it is meant to be shown.
    shown = a.run("secret", "list", "weather", "--show-values", "-o", "json").out.encode()
    assert any(form in shown for form in forms(SECRETS["s4"]))

    leaks = rec.leaks()
    assert not leaks, leaks
    # Key names do travel (they are the audit trail).
    history = json.loads(a.run("state", "history", "-o", "json").out)
    keys = {k for e in history if e["type"].startswith("secret.") for k in e["data"]["keys"]}
    assert {"API_KEY", "TOKEN", "OTHER", "BY_HAND"} <= keys


def umask0(env: Env, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed CLI under `umask 000`."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    child.update(
        WASSETTE_STATE_DB=str(env.db),
        WASSETTE_COMPONENT_DIR=str(env.component_dir),
        WASSETTE_SECRETS_DIR=str(env.secrets_dir),
        WASSETTE_ACTOR="umask@test",
        HOME=str(env.root / "home"),
    )
    proc = subprocess.run(
        ["sh", "-c", 'umask 000; exec "$0" "$@"', wassette_exe(), *args],
        input=input,
        capture_output=True,
        text=True,
        env=child,
        cwd=env.root,
        timeout=120,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_modes_hold_under_umask_000(env: Env, tmp_path: Path) -> None:
    fx.write_component(tmp_path / "c.wasm", kind="simple")
    umask0(env, "component", "attach", str(tmp_path / "c.wasm"))
    umask0(env, "secret", "set", "c", "API_KEY=v1")
    assert mode(env.secrets_dir) == 0o700
    secrets_file = secret_files.secrets_file(env.secrets_dir, "c")
    assert mode(secrets_file) == 0o600
    umask0(env, "secret", "set", "c", "--stdin", input="API_KEY=v2\nOTHER=x\n")
    assert mode(secrets_file) == 0o600
    umask0(env, "secret", "delete", "c", "OTHER")
    assert mode(secrets_file) == 0o600
    assert mode(env.secrets_dir) == 0o700

    for name in ("state.json", "state.yaml"):
        target = tmp_path / name
        umask0(env, "state", "export", str(target))
        assert mode(target) == 0o600, name
        # Over an existing world-writable file too.
        os.chmod(target, 0o666)
        umask0(env, "state", "export", str(target))
        assert mode(target) == 0o600, name

    # A secrets dir someone loosened is tightened again by the next write.
    os.chmod(env.secrets_dir, 0o777)
    umask0(env, "secret", "set", "c", "API_KEY=v3")
    assert mode(env.secrets_dir) == 0o700
    assert mode(secrets_file) == 0o600
    leftovers = [p.name for p in env.secrets_dir.iterdir() if p.name != secrets_file.name]
    assert not leftovers, leftovers
