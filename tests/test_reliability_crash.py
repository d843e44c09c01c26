"""`kill -9` at random moments: the store is exactly before or after the command, `state verify`
passes, and the next mutating command repairs the files.

Each scenario builds a base store once (at the fixed trial path, so the recorded paths never
change), measures the command's uninterrupted duration and its "after" state with a reference
run, then restores the base and SIGKILLs the command after a seeded random delay, many times.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests import wasm_fixtures as fx
from tests.conftest import BOTH, Env, ok, wassette_exe
from wassette_state.cli.main import cli
from wassette_state.store.domain import events as ev
from wassette_state.store.files import materialize
from wassette_state.store.usecases import inputs
from wassette_state.store.usecases.service import Decision, Store

SEED = 20261125
POLICY = 'version: "1.0"\npermissions:\n  network:\n    allow:\n    - host: api.example.com\n'


def child_env(env: Env, actor: str = "crash@test") -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    out.update(
        WASSETTE_STATE_DB=env.db_arg,
        WASSETTE_COMPONENT_DIR=str(env.component_dir),
        WASSETTE_SECRETS_DIR=str(env.secrets_dir),
        WASSETTE_ACTOR=actor,
        HOME=str(env.root / "home"),
        XDG_DATA_HOME=str(env.root / "xdg-data"),
        XDG_CONFIG_HOME=str(env.root / "xdg-config"),
    )
    return out


def in_process(env: Env, *args: str) -> tuple[int, str]:
    """The real click application in this process (cheaper than a subprocess for reads)."""
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            env.db_arg,
            "--component-dir",
            str(env.component_dir),
            "--secrets-dir",
            str(env.secrets_dir),
            "--actor",
            "checker@test",
            *args,
        ],
        catch_exceptions=True,
        env={"XDG_DATA_HOME": str(env.root / "xdg-data")},  # the CLI's data dir (PostgreSQL)
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 99, f"{type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.stdout


def show(env: Env) -> dict[str, Any]:
    code, out = in_process(env, "state", "show", "-o", "json")
    assert code == 0, out
    doc: dict[str, Any] = json.loads(out)
    return doc


def normalize(doc: dict[str, Any], volatile_components: bool) -> dict[str, Any]:
    """Drop what legitimately differs between two runs of the same command."""
    doc = json.loads(json.dumps(doc))
    doc.pop("exported_at", None)
    doc["as_of"].pop("recorded_at", None)
    if volatile_components:  # attach stamps created_at / attached_at with the wall clock
        for c in doc["components"]:
            (c.get("metadata") or {}).pop("created_at", None)
            if c.get("policy"):
                c["policy"].pop("attached_at", None)
    return doc


def head_seq(doc: dict[str, Any]) -> int:
    return int(doc["as_of"]["seq"])


def dir_problems(env: Env, doc: dict[str, Any]) -> list[str]:
    """Differences between the component dir and the state as `state show -o json` gives it
    (hidden temp files excluded; see the temp-file test)."""
    return component_dir_problems(env.component_dir, doc)


def component_dir_problems(cdir: Path, doc: dict[str, Any]) -> list[str]:
    problems = []
    expected: dict[str, Any] = {}
    for c in doc["components"]:
        cid = c["component_id"]
        expected[f"{cid}.wasm"] = c["wasm_sha256"]
        expected[f"{cid}.metadata.json"] = c["metadata"]
        if c["policy"] is not None:
            p = c["policy"]
            expected[f"{cid}.policy.yaml"] = p["policy_content"]
            expected[f"{cid}.policy.meta.json"] = {
                "attached_at": p["attached_at"],
                "source_uri": p["source_uri"],
            }
    present = (
        {p.name for p in cdir.iterdir() if not p.name.startswith(".")} if cdir.is_dir() else set()
    )
    for name in sorted(present - set(expected)):
        problems.append(f"unexpected file {name}")
    for name in sorted(set(expected) - present):
        problems.append(f"missing file {name}")
    for name in sorted(set(expected) & present):
        path = cdir / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name} is not a regular file")
            continue
        data = path.read_bytes()
        want = expected[name]
        if name.endswith(".wasm"):
            same = hashlib.sha256(data).hexdigest() == want
        elif name.endswith(".policy.yaml"):
            same = data == want.encode()
        else:
            try:
                same = json.loads(data) == want
            except ValueError:
                same = False
        if not same:
            problems.append(f"{name}: wrong content")
    return problems


def entries(env: Env) -> int:
    try:
        return len(os.listdir(env.component_dir))
    except FileNotFoundError:
        return 0


def temp_files(env: Env) -> list[str]:
    cdir = env.component_dir
    if not cdir.is_dir():
        return []
    return sorted(p.name for p in cdir.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- library seeding


def variants(n: int, label: str) -> list[bytes]:
    base = fx.KINDS["simple"]()
    return [fx.with_custom_section(base, "reliability", f"{label}-{i}".encode()) for i in range(n)]


def attach_events(store: Store, datas: list[bytes], prefix: str) -> list[ev.Event]:
    """component.attached + policy.attached for each binary, introspected once (same tools)."""
    tools = inputs.introspect_cached(store, datas[0], materialize.sha256_hex(datas[0]), "x.wasm")
    out: list[ev.Event] = []
    for i, data in enumerate(datas):
        sha = store.blobs.put(data)
        cid = f"{prefix}{i:03d}"
        loaded = inputs.Loaded(cid, f"file:///srv/{cid}.wasm", data, sha, 1_700_000_000, tools)
        out.append(
            ev.ComponentAttached(
                component_id=cid,
                source_uri=loaded.source_uri,
                wasm_sha256=sha,
                metadata=inputs.build_metadata(loaded, 1_700_000_000),
            )
        )
        out.append(
            ev.PolicyAttached(
                component_id=cid,
                source_uri=f"file:///etc/wassette/{cid}.policy.yaml",
                policy_content=POLICY,
                attached_at=1_700_000_000,
            )
        )
    return out


# ----------------------------------------------------------------------------- harness


@dataclass
class Scenario:
    name: str
    base: Path
    args: list[str]
    volatile: bool
    before: dict[str, Any] = field(default_factory=dict)
    before_seq: int = 0
    after: dict[str, Any] = field(default_factory=dict)
    after_seq: int = 0
    duration: float = 0.0
    new_files: int = 0  # how many component-dir entries the command adds (for progress kills)


@dataclass
class Tally:
    trials: int = 0
    killed: int = 0
    finished: int = 0
    killed_by_progress: int = 0
    landed_before: int = 0
    landed_after: int = 0
    repaired: int = 0
    temp_litter: int = 0


class Databases:
    """For PostgreSQL trials: the base store's database, copied anew before every trial
    (SQLite's is a file among the base's, copied with them)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.made: list[str] = []

    def clone(self) -> str:
        name = self.server.clone()
        self.made.append(name)
        return str(self.server.url(name))

    def restore(self, base: Path, trial: Env) -> None:
        if trial.url:
            name = self.server.name_of(trial.url)
            self.made.append(name)
            self.server.copy((base / BASE_DB).read_text(), name)


BASE_DB = ".pg-database"  # in a base dir: the name of its PostgreSQL database


@pytest.fixture
def databases(backend: str, request: pytest.FixtureRequest) -> Iterator[Databases | None]:
    if backend != "postgres":
        yield None
        return
    dbs = Databases(request.getfixturevalue("pg_server"))
    yield dbs
    for name in dbs.made:
        dbs.server.drop(name)


def trial_of(work: Path, base: Path) -> Env:
    """The trial site for a base: its PostgreSQL database (if any) is a copy of the base's."""
    pg = base / BASE_DB
    if not pg.exists():
        return Env(work / "trial")
    from sqlalchemy.engine import make_url

    from tests.pg import ADMIN_URL

    url = make_url(ADMIN_URL).set(database=pg.read_text() + "_trial")
    return Env(work / "trial", url.render_as_string(hide_password=False))


def restore(base: Path, trial: Env, dbs: Databases | None = None) -> None:
    shutil.rmtree(trial.root, ignore_errors=True)
    shutil.copytree(base, trial.root, symlinks=True)
    if dbs is not None:
        dbs.restore(base, trial)


def prepare(scn: Scenario, trial: Env, dbs: Databases | None) -> None:
    """Record the before state, then run the command uninterrupted for the after state."""
    restore(scn.base, trial, dbs)
    before = show(trial)
    scn.before = normalize(before, scn.volatile)
    scn.before_seq = head_seq(before)
    start = time.monotonic()
    proc = subprocess.run(
        [wassette_exe(), *scn.args],
        env=child_env(trial),
        capture_output=True,
        text=True,
        timeout=300,
    )
    scn.duration = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    after = show(trial)
    scn.after = normalize(after, scn.volatile)
    scn.after_seq = head_seq(after)
    assert scn.after_seq > scn.before_seq
    assert scn.after != scn.before


def run_trials(
    scn: Scenario, trial: Env, count: int, rng: random.Random, dbs: Databases | None
) -> Tally:
    tally = Tally()
    for i in range(count):
        restore(scn.base, trial, dbs)
        # Half the trials die after a random delay; the other half once a random number of new
        # entries showed up in the component dir (the window after the commit is short, and a
        # delay alone rarely lands in it on a busy machine).
        by_progress = scn.new_files > 0 and i % 2 == 1
        delay = rng.uniform(0.05, scn.duration * 1.1)
        threshold = rng.randint(1, scn.new_files) if by_progress else 0
        start = time.monotonic()
        proc = subprocess.Popen(
            [wassette_exe(), *scn.args],
            env=child_env(trial),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if by_progress:
            baseline = entries(trial)
            while proc.poll() is None and time.monotonic() - start < 300:
                if entries(trial) - baseline >= threshold:
                    break
                time.sleep(0.002)
            delay = time.monotonic() - start
        try:
            proc.wait(timeout=0 if by_progress else delay)
            tally.finished += 1
            assert proc.returncode == 0, f"{scn.name} trial {i}: exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            tally.killed += 1
            tally.killed_by_progress += by_progress
        tally.trials += 1
        how = f"at {threshold} new files" if by_progress else "after a random delay"
        where = f"{scn.name} trial {i} (killed {how}, {delay:.2f}s)"

        raw = show(trial)
        doc = normalize(raw, scn.volatile)
        seq = head_seq(raw)
        if seq == scn.before_seq:
            assert doc == scn.before, f"{where}: event count is 'before' but the state is not"
            tally.landed_before += 1
        else:
            assert seq == scn.after_seq, f"{where}: {seq} events, not {scn.before_seq} or after"
            assert doc == scn.after, f"{where}: event count is 'after' but the state is not"
            tally.landed_after += 1

        code, out = in_process(trial, "state", "verify")
        assert code == 0, f"{where}: verify failed: {out}"

        repair = subprocess.run(
            [wassette_exe(), "env", "set", f"REPAIRED={i}"],
            env=child_env(trial),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert repair.returncode == 0, f"{where}: {repair.stderr}"
        problems = dir_problems(trial, show(trial))
        assert not problems, f"{where}: files do not match the state after a repair: {problems}"
        tally.repaired += 1
        if temp_files(trial):
            tally.temp_litter += 1
    return tally


def report(scn: Scenario, tally: Tally, backend: str) -> None:
    print(
        f"\ncrash[{scn.name}, {backend}]: {tally.trials} trials "
        f"(uninterrupted {scn.duration:.2f}s): "
        f"{tally.killed} killed ({tally.killed_by_progress} of them on observed progress), "
        f"{tally.finished} finished first; state before "
        f"{tally.landed_before}, after {tally.landed_after}; repaired {tally.repaired}; "
        f"temp files left behind in {tally.temp_litter}"
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash")


def build_base(
    work: Path, name: str, build: Callable[[Env], None], dbs: Databases | None = None
) -> Path:
    """Build at the trial path (so the recorded paths match every trial), then move aside."""
    trial = Env(work / "trial", dbs.clone() if dbs is not None else None)
    shutil.rmtree(trial.root, ignore_errors=True)
    trial.root.mkdir()
    build(trial)
    base = work / f"base-{name}"
    shutil.rmtree(base, ignore_errors=True)
    shutil.move(str(trial.root), str(base))
    if dbs is not None and trial.url:
        (base / BASE_DB).write_text(dbs.server.name_of(trial.url))
    return base


# ----------------------------------------------------------------------------- scenarios

IMPORT_COMPONENTS = 300
ROLLBACK_COMPONENTS = 100


@dataclass
class ImportBase:
    src: Path  # a store holding the components' wasm in its blob store
    snapshot: Path

    def base(self, work: Path, dbs: Databases | None) -> Path:
        def build(env: Env) -> None:
            ok(env.run("env", "set", "BEFORE=1"))
            blobs = env.settings().data_dir / "blobs"  # type: ignore[attr-defined]
            shutil.copytree(self.src / "blobs", blobs, dirs_exist_ok=True)

        return build_base(work, "import", build, dbs)


@pytest.fixture(scope="module")
def import_base(work: Path) -> ImportBase:
    """A store holding the 300 components' wasm in its blob store, and a snapshot of them."""
    src = Env(work / "import-src")
    src.root.mkdir()
    store: Any = src.store()
    datas = variants(IMPORT_COMPONENTS, "import")
    seed = attach_events(store, datas, "imp")
    seed += [ev.EnvSet(key=f"IMPORTED_{i}", value=f"v{i}") for i in range(20)]
    store.execute("seed", lambda _s: Decision(list(seed)))
    store.close()
    snapshot = work / "import-snapshot.json"
    ok(src.run("state", "export", str(snapshot)))
    return ImportBase(src.root, snapshot)


@pytest.mark.slow
@BOTH
def test_kill_during_large_import(
    work: Path, import_base: ImportBase, databases: Databases | None, backend: str
) -> None:
    base = import_base.base(work, databases)
    trial = trial_of(work, base)
    scn = Scenario(
        "import",
        base,
        ["state", "import", str(import_base.snapshot)],
        volatile=False,
        new_files=4 * IMPORT_COMPONENTS,
    )
    prepare(scn, trial, databases)
    assert len(scn.after["components"]) == IMPORT_COMPONENTS
    tally = run_trials(scn, trial, 14, random.Random(SEED), databases)
    report(scn, tally, backend)
    assert tally.trials == 14


@pytest.mark.slow
@BOTH
def test_kill_during_rollback(work: Path, databases: Databases | None, backend: str) -> None:
    marks: dict[str, int] = {}

    def build(env: Env) -> None:
        store: Any = env.store()
        datas = variants(ROLLBACK_COMPONENTS, "rollback")
        seed = attach_events(store, datas, "rb")
        out = store.execute("seed", lambda _s: Decision(list(seed)))
        marks["attached_tx"] = out.tx_id
        gone = [ev.ComponentDetached(component_id=f"rb{i:03d}") for i in range(ROLLBACK_COMPONENTS)]
        store.execute("detach all", lambda _s: Decision(list(gone)))
        store.close()
        ok(env.run("env", "set", "AFTER_DETACH=1"))

    base = build_base(work, "rollback", build, databases)
    trial = trial_of(work, base)
    scn = Scenario(
        "rollback",
        base,
        ["state", "rollback", "--to", f"tx:{marks['attached_tx']}", "--yes"],
        volatile=False,
        new_files=4 * ROLLBACK_COMPONENTS,
    )
    prepare(scn, trial, databases)
    assert len(scn.after["components"]) == ROLLBACK_COMPONENTS
    assert not scn.before["components"]
    tally = run_trials(scn, trial, 16, random.Random(SEED + 1), databases)
    report(scn, tally, backend)
    assert tally.trials == 16


@pytest.mark.slow
@BOTH
def test_kill_during_attach(work: Path, databases: Databases | None, backend: str) -> None:
    inputs = work / f"attach-inputs-{backend}"
    inputs.mkdir()
    fx.write_component(inputs / "old.wasm", kind="simple")
    fx.write_component(inputs / "fresh.wasm", kind="weather")
    (inputs / "fresh.policy.yaml").write_text(POLICY)

    def build(env: Env) -> None:
        ok(
            env.run(
                "component",
                "attach",
                str(inputs / "old.wasm"),
                "--policy",
                str(inputs / "fresh.policy.yaml"),
            )
        )
        ok(env.run("env", "set", "BEFORE=1"))

    base = build_base(work, "attach", build, databases)
    trial = trial_of(work, base)
    scn = Scenario(
        "attach",
        base,
        [
            "component",
            "attach",
            str(inputs / "fresh.wasm"),
            "--policy",
            str(inputs / "fresh.policy.yaml"),
        ],
        volatile=True,
        new_files=4,
    )
    prepare(scn, trial, databases)
    tally = run_trials(scn, trial, 22, random.Random(SEED + 2), databases)
    report(scn, tally, backend)
    assert tally.trials == 22


CRASH_AFTER_COMMIT = r"""
import os, sys
from wassette_state.store.usecases import commands, inputs
from wassette_state.store.domain import events as ev
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Decision, Store

db, cdir, sdir, wasm = sys.argv[1:5]
store = Store(resolve(db, cdir, sdir, "crash@test"))
loaded = inputs.load_component(store, wasm, "late")
store.blobs.put(loaded.data, loaded.sha256)

def decide(state):
    return Decision([
        ev.ComponentAttached(component_id="late", source_uri=loaded.source_uri,
                             wasm_sha256=loaded.sha256,
                             metadata=inputs.build_metadata(loaded, 1700000000)),
        ev.PolicyAttached(component_id="late", source_uri="file:///p.yaml",
                          policy_content='version: "1.0"\npermissions: {}\n',
                          attached_at=1700000000),
        ev.ComponentDetached(component_id="early"),
    ])

store.execute("crash between commit and files", decide, after=lambda *a: os._exit(9))
raise SystemExit("unreachable: the after hook exits")
"""


@BOTH
def test_crash_between_commit_and_materialization(env: Env, tmp_path: Path) -> None:
    fx.write_component(tmp_path / "early.wasm", kind="simple")
    fx.write_component(tmp_path / "late.wasm", kind="mixed")
    (tmp_path / "p.yaml").write_text(POLICY)
    ok(
        env.run(
            "component",
            "attach",
            str(tmp_path / "early.wasm"),
            "--policy",
            str(tmp_path / "p.yaml"),
        )
    )
    seq_before = head_seq(show(env))
    assert (env.component_dir / "early.wasm").is_file()

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH_AFTER_COMMIT,
            env.db_arg,
            str(env.component_dir),
            str(env.secrets_dir),
            str(tmp_path / "late.wasm"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        env=env.environ(),
    )
    assert proc.returncode == 9, proc.stderr
    doc = show(env)
    assert head_seq(doc) == seq_before + 3, "the transaction was committed before the crash"
    assert [c["component_id"] for c in doc["components"]] == ["late"]
    # The crash left the files of the previous state: that is what must be repaired.
    assert not (env.component_dir / "late.wasm").exists()
    assert (env.component_dir / "early.wasm").exists()
    assert dir_problems(env, doc)

    verify = env.run("state", "verify")
    assert verify.code == 0, verify.err

    ok(env.run("env", "set", "X=1"))
    doc = show(env)
    assert dir_problems(env, doc) == []
    assert doc["environment"]["X"] == "1"
    assert ok(env.run("state", "verify")).out.startswith("ok:")


@pytest.mark.slow
@BOTH
def test_repair_removes_temp_files_of_a_killed_writer(
    work: Path, import_base: ImportBase, databases: Databases | None
) -> None:
    """A writer killed inside an atomic write leaves `.<name>.*.tmp` in the component dir.

    Wassette scans that directory; the repair (which runs under the materialization lock, so no
    live writer owns such a file) should leave it clean.
    """
    base, snapshot = import_base.base(work, databases), import_base.snapshot
    trial = trial_of(work, base)
    litter: list[str] = []
    for _attempt in range(6):
        restore(base, trial, databases)
        proc = subprocess.Popen(
            [wassette_exe(), "state", "import", str(snapshot)],
            env=child_env(trial),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill once materialization is under way (progress observed, not a timing guess).
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            cdir = trial.component_dir
            if cdir.is_dir() and sum(1 for _ in cdir.iterdir()) >= 40:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
        litter = temp_files(trial)
        if litter:
            break
    if not litter:
        # No kill landed inside a write this time: leave exactly what such a kill leaves (a
        # temp file beside its target) so the repair is tested either way, never skipped.
        trial.component_dir.mkdir(parents=True, exist_ok=True)
        (trial.component_dir / ".weather.wasm.k1ll3d.tmp").write_bytes(b"partial")
        litter = temp_files(trial)
        assert litter, "the planted temp file is not recognised as a writer's temp file"
    ok(trial.run("env", "set", "REPAIR=1"))
    assert dir_problems(trial, show(trial)) == []
    assert temp_files(trial) == [], (
        f"the repair left the killed writer's temp files in the component dir: {temp_files(trial)}"
    )
