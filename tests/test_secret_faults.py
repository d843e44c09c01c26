"""Fault injection into the two-phase secrets changes (DESIGN §3.3, issue 14).

Every write, fsync, rename and unlink of `secret set`, `secret delete`, rollback, import and
detach passes a test seam (`fsutil.fault`, driven by WASSETTE_STATE_FAULT=STEP:ACTION[:N]).
For each step each command passes, the command is run again from the same base with a fault
there: an OSError (ENOSPC, EACCES) or Ctrl-C in this process, or SIGKILL of a real process
(forked from this one once the modules are imported, so a trial costs milliseconds, not an
interpreter start; a few trials exec the installed CLI, to show the seam works there too).
Then the next command (`state sync`, which also reports the files' drift) runs, and the log
and the secrets files must agree: each file holds exactly what the committed log says (the
command's new file if its transaction committed, the old one byte for byte if not), sync
finds no drift, nothing is left staged, and no value is in the database. Faults are also
injected into the next command's own settling of what an interrupted one left.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import wassette_exe
from wassette_state.store.files import fsutil

OLD = "old-value-fa017e55"
KEEP = "kept-value-0b5e2c91"
NEW = "new-value-9d4c33a8"
ADDED = "added-value-7e61d0f2"
VALUES = (OLD, KEEP, NEW, ADDED)

FILES = ("c", "d", "e", "r", "x", "y")  # the components whose secrets files are checked


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]


COMMANDS = (
    Command("secret set", ("secret", "set", "c", f"API_KEY={NEW}", f"OTHER={ADDED}")),
    Command("secret delete (a key)", ("secret", "delete", "d", "API_KEY")),
    Command("secret delete (the last key)", ("secret", "delete", "e", "ONLY")),
    Command("rollback", ("state", "rollback", "--to", "tag:before-other", "--yes")),
    Command("import --prune", ("state", "import", "{root}/without-x.json", "--prune", "--yes")),
    Command("component detach", ("component", "detach", "y")),
)


# ----------------------------------------------------------------------------- a site


@dataclass
class Site:
    """A store at a fixed path (so the paths it records never change), restored from `base`
    before each trial."""

    root: Path
    base: Path

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def globals(self) -> list[str]:
        return [
            "--db",
            str(self.root / "state.db"),
            "--component-dir",
            str(self.root / "components"),
            "--secrets-dir",
            str(self.secrets_dir),
            "--actor",
            "faults@test",
        ]

    def argv(self, command: Command) -> list[str]:
        return [a.replace("{root}", str(self.root)) for a in command.args]

    def restore(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(self.base, self.root, symlinks=True)

    def files(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for cid in FILES:
            p = self.secrets_dir / f"{cid}.yaml"
            out[cid] = p.read_bytes() if p.exists() else None
        return out

    def leftovers(self) -> list[str]:
        """Staged or temp files, anything in the secrets dir but `<id>.yaml` files."""
        found = []
        for p in self.secrets_dir.rglob("*"):
            if p.is_dir() and not any(p.iterdir()):
                continue
            if not (p.parent == self.secrets_dir and p.name.endswith(".yaml")):
                found.append(str(p.relative_to(self.secrets_dir)))
        return sorted(found)

    def db_bytes(self) -> bytes:
        return b"".join(
            Path(str(self.root / "state.db") + s).read_bytes()
            for s in ("", "-wal")
            if Path(str(self.root / "state.db") + s).exists()
        )

    def head_tx(self) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.root / "state.db")) as conn:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM transactions").fetchone()[0])

    def child_env(self, fault: str | None, trace: Path | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
        env.update(
            HOME=str(self.root / "home"),
            XDG_DATA_HOME=str(self.root / "xdg-data"),
            XDG_CONFIG_HOME=str(self.root / "xdg-config"),
        )
        if fault:
            env[fsutil.FAULT_ENV] = fault
        if trace:
            env[fsutil.FAULT_LOG_ENV] = str(trace)
        return env


@contextlib.contextmanager
def fault_env(fault: str | None, trace: Path | None = None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (fsutil.FAULT_ENV, fsutil.FAULT_LOG_ENV)}
    for key, value in ((fsutil.FAULT_ENV, fault), (fsutil.FAULT_LOG_ENV, trace)):
        if value:
            os.environ[key] = str(value)
        else:
            os.environ.pop(key, None)
    fsutil.reset_faults()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def in_process(
    site: Site, *args: str, fault: str | None = None, trace: Path | None = None
) -> tuple[int, str, str]:
    """The CLI's own `main` in this process (exit code, stdout, stderr)."""
    from wassette_state.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with fault_env(fault, trace), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*site.globals(), *args])
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def forked(site: Site, *args: str, fault: str | None = None) -> int:
    """The CLI's `main` in a child process forked from this one: its exit code, or -9 when
    the fault killed it."""
    from wassette_state.cli.main import main

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            with fault_env(fault):
                try:
                    main([*site.globals(), *args])
                    code = 0
                except SystemExit as e:
                    code = int(e.code or 0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def subprocess_run(
    site: Site, *args: str, fault: str | None = None, trace: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [wassette_exe(), *site.globals(), *args],
        env=site.child_env(fault, trace),
        cwd=site.root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def build(root: Path) -> Site:
    """Components c, d, e, r, x, y with secrets; a tag before r's second key; a state file
    without x. Built at `root`, then kept aside as the base."""
    base = root.with_name(root.name + "-base")
    site = Site(root, base)
    root.mkdir(parents=True)
    wasm = root / "inputs" / "c.wasm"
    wasm.parent.mkdir()
    fx.write_component(wasm, kind="simple")

    def run(*args: str, stdin: str | None = None) -> None:
        code, out, err = in_process(site, *args)
        assert code == 0, (args, out, err)

    for cid in ("c", "d", "e", "r", "x", "y"):
        run("component", "attach", str(wasm), "--id", cid)
    run("secret", "set", "c", f"API_KEY={OLD}")
    run("secret", "set", "d", f"API_KEY={OLD}", f"OTHER={KEEP}")
    run("secret", "set", "e", f"ONLY={OLD}")
    run("secret", "set", "x", f"API_KEY={OLD}")
    run("secret", "set", "y", f"API_KEY={OLD}")
    run("secret", "set", "r", f"API_KEY={KEEP}")
    run("state", "tag", "before-other")
    run("secret", "set", "r", f"OTHER={OLD}")
    run("state", "export", str(root / "full.json"))
    doc = json.loads((root / "full.json").read_text())
    doc["components"] = [c for c in doc["components"] if c["component_id"] != "x"]
    (root / "without-x.json").write_text(json.dumps(doc))
    shutil.copytree(root, base, symlinks=True)
    return site


# ----------------------------------------------------------------------------- checks


Step = tuple[str, int]  # a step and which passage of it (a command staging 2 files passes twice)


@dataclass
class Reference:
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]
    steps: list[Step]  # in the order the command passes them
    head_before: int


# seams that only line up races between processes (tests/test_races.py), not a write, fsync,
# rename or unlink: no fault of the disk can happen there
RACE_SEAMS = {"decided"}


def traced(site: Site, trace: Path, *args: str) -> list[Step]:
    trace.unlink(missing_ok=True)
    code, out, err = in_process(site, *args, trace=trace)
    assert code == 0, (args, out, err)
    seen: Counter[str] = Counter()
    steps = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        kind, step = line.split()[:2]
        if kind == "pass" and step not in RACE_SEAMS:
            seen[step] += 1
            steps.append((step, seen[step]))
    return steps


def reference(site: Site, command: Command, trace: Path) -> Reference:
    site.restore()
    before = site.files()
    head = site.head_tx()
    steps = traced(site, trace, *site.argv(command))
    assert site.head_tx() == head + 1
    return Reference(before, site.files(), steps, head)


def check_agree(site: Site, ref: Reference, label: str, committed: bool) -> list[str]:
    """After the next command: the files are what the log says (the faulted command's new
    files if its transaction committed, else the old ones), with no drift."""
    problems = []
    code, out, err = in_process(site, "state", "sync", "-o", "json")
    if code != 0:
        return [f"{label}: the next command failed ({code}): {err.strip()}"]
    drift = json.loads(out)["drift"]
    if drift:
        problems.append(f"{label}: sync found drift {drift}")
    want = ref.after if committed else ref.before
    have = site.files()
    for cid in FILES:
        if have[cid] != want[cid]:
            state = "committed" if committed else "not committed"
            problems.append(
                f"{label}: {cid}.yaml is {have[cid]!r}, the log ({state}) says {want[cid]!r}"
            )
    if site.leftovers():
        problems.append(f"{label}: left in the secrets dir: {site.leftovers()}")
    raw = site.db_bytes()
    problems.extend(f"{label}: {v} in the database" for v in VALUES if v.encode() in raw)
    for text in (out, err):
        problems.extend(f"{label}: {v} printed" for v in VALUES if v in text)
    return problems


def os_error_for(step: str) -> str:
    """ENOSPC where a disk fills up (writes, fsyncs), EACCES where permissions bite (renames,
    unlinks in a dir that became read-only)."""
    return "enospc" if step.endswith(("write", "fsync", "fsync-dir", ".before")) else "eacces"


# ----------------------------------------------------------------------------- the matrix


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """On a tmpfs when there is one: its fsyncs cost nothing, and the trials are about what a
    process leaves when it fails or dies, not about what a power cut loses."""
    import tempfile

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="wassette-faults-", dir=shm))
    else:
        root = tmp_path_factory.mktemp("faults")
    try:
        yield build(root / "site")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_fault_matrix_log_and_secrets_files_always_agree(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace"
    refs = {c.name: reference(site, c, trace) for c in COMMANDS}
    for c in COMMANDS:  # every command passes the staging steps, the commit and the promotion
        names = {s for s, _ in refs[c.name].steps}
        assert {"stage.write", "stage.fsync", "stage.fsync-dir", "commit.before"} <= names, c
        assert {"commit.after", "promote.fsync-dir"} <= names, c
        assert names & {"promote.rename", "promote.unlink"}, c

    # What a next command settles: a change committed but not in place (killed after the
    # commit) and a change staged but never committed (killed before it).
    left_by = {"committed": "commit.after", "never committed": "commit.before"}
    recovery: dict[tuple[str, str], list[Step]] = {}
    for c in COMMANDS:
        for what, at in left_by.items():
            site.restore()
            assert forked(site, *site.argv(c), fault=f"{at}:kill") == -9
            recovery[(c.name, what)] = traced(site, trace, "secret", "list", "c")
            names = {s for s, _ in recovery[(c.name, what)]}
            assert names & {"recover.rename", "recover.unlink", "recover.discard"}, (c, what)

    problems: list[str] = []
    injected: Counter[str] = Counter()

    # OSErrors and Ctrl-C, in this process: at each step of the command, then at each step
    # of the next command settling what a failed one left.
    for c in COMMANDS:
        ref = refs[c.name]
        for step, nth in ref.steps:
            for action in (os_error_for(step), "sigint"):
                label = f"{c.name}: {action} at {step}#{nth}"
                site.restore()
                code, _, err = in_process(site, *site.argv(c), fault=f"{step}:{action}:{nth}")
                injected[action] += len(fsutil.fired)
                if fsutil.fired != [f"{step}:{action}"]:
                    problems.append(f"{label}: injected {fsutil.fired}")
                if code == 0:
                    problems.append(f"{label}: the command reported success")
                if "unexpected failure" in err or "Traceback" in err:
                    problems.append(f"{label}: {err.strip()}")
                committed = site.head_tx() > ref.head_before
                if not committed and site.files() != ref.before:
                    problems.append(f"{label}: not committed, yet the files changed")
                problems.extend(check_agree(site, ref, label, committed))
        promote = next(s for s, _ in ref.steps if s in ("promote.rename", "promote.unlink"))
        leave = {  # in-process ways to leave each kind of staged change behind
            "committed": f"{promote}:eacces",
            "never committed": "commit.before:enospc,discard.discard:eacces",
        }
        # A change refuses to start on what it cannot settle; a read goes on.
        next_commands = {
            "env set": (("env", "set", "NEXT=1"), 1),
            "secret list": (("secret", "list", "c"), 0),
        }
        for what, fault in leave.items():
            for step, nth in recovery[(c.name, what)]:
                for name, (argv, expected) in next_commands.items():
                    action = os_error_for(step)
                    label = f"{c.name}: {what} change left, then {action} at {step}#{nth} ({name})"
                    site.restore()
                    in_process(site, *site.argv(c), fault=fault)
                    committed = site.head_tx() > ref.head_before
                    head = site.head_tx()
                    code, _, err = in_process(site, *argv, fault=f"{step}:{action}:{nth}")
                    injected[f"{action} (settling)"] += len(fsutil.fired)
                    if fsutil.fired != [f"{step}:{action}"]:
                        problems.append(f"{label}: injected {fsutil.fired}")
                    if code != expected or (expected and "nothing was changed" not in err):
                        problems.append(f"{label}: {code} {err.strip()}")
                    if site.head_tx() != head:
                        problems.append(f"{label}: the next command was recorded")
                    problems.extend(check_agree(site, ref, label, committed))

    # SIGKILL of a real process at each step, and at each step of the settling after a kill.
    trials: list[tuple[Command, Step, Step | None]] = []
    for c in COMMANDS:
        trials += [(c, step, None) for step in refs[c.name].steps]
        for what, at in left_by.items():
            trials += [(c, (at, 1), then) for then in recovery[(c.name, what)]]

    def kill_trial(c: Command, at: Step, then: Step | None, run: Any = forked) -> list[str]:
        ref = refs[c.name]
        site.restore()
        label = f"{c.name}: kill at {at[0]}#{at[1]}"
        code = run(site, *site.argv(c), fault=f"{at[0]}:kill:{at[1]}")
        if code != -9:
            return [f"{label}: not killed ({code})"]
        committed = site.head_tx() > ref.head_before
        if not committed and site.files() != ref.before:
            return [f"{label}: not committed, yet the files changed"]
        if then is not None:
            label += f", then kill at {then[0]}#{then[1]}"
            code = run(site, "secret", "list", "c", fault=f"{then[0]}:kill:{then[1]}")
            if code != -9:
                return [f"{label}: the next command was not killed ({code})"]
        return check_agree(site, ref, label, committed)

    for c, at, then in trials:
        problems += kill_trial(c, at, then)
        injected["kill"] += 1 + (then is not None)

    # The same seam in the installed CLI, started afresh: killed after the commit, and in the
    # middle of writing the staged file.
    def exec_cli(at_site: Site, *args: str, fault: str | None = None) -> int:
        return subprocess_run(at_site, *args, fault=fault).returncode

    for c in COMMANDS[:3]:
        for at in (("commit.after", 1), ("stage.write", 1)):
            problems += kill_trial(c, at, None, exec_cli)
            injected["kill (exec'd CLI)"] += 1

    total = sum(injected.values())
    with capsys.disabled():
        print(
            f"\nfault injection: {total} faults injected ({dict(sorted(injected.items()))}); "
            f"{len(problems)} left the log and the secrets files disagreeing"
        )
    assert not problems, "\n".join(problems)
    assert total >= 200
