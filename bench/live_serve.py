"""How soon a running Wassette serves a change (issue 12, point 1).

    python -m bench.live_serve                 # 50 trials each
    python -m bench.live_serve --trials 100 --json

Starts the real Wassette 0.8.0 (`../shared/tools/real-wassette serve --streamable-http` on a
free 127.0.0.1 port) on a scratch store, keeps one MCP session open to it, and per trial:

- runs `wassette-state component attach cN.wasm` (a new component with one new tool `tN`) as
  a subprocess with `WASSETTE_STATE_WASSETTE_URL` set, and measures from the process's exit to
  the first successful `tools/call` of `tN` (retried until it answers);
- runs `wassette-state component detach cN` and measures from its exit to the first
  `tools/list` without `tN` whose `tools/call tN` also fails.

It also times the same commands with `--wassette-url off` (nothing told), so the table shows
what telling Wassette adds to a command. Without it, a running Wassette never serves the new
tool (calls fail with "Tool not found") and keeps serving a detached one until it restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/live_serve.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wassette_state.store.live import mcp

REPO = Path(__file__).resolve().parents[1]
TOOL = Path(os.environ.get("REAL_WASSETTE", REPO.parent / "shared" / "tools" / "real-wassette"))


def component(tool: str, value: int) -> bytes:
    """A component whose one function `tool() -> u32` answers `value`."""
    import wasmtime

    return bytes(
        wasmtime.wat2wasm(
            f'(component (core module $m (func (export "f") (result i32) i32.const {value}))'
            " (core instance $c (instantiate $m))"
            ' (func $f (result u32) (canon lift (core func $c "f")))'
            f' (export "{tool}" (func $f)))'
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli() -> str:
    here = Path(sys.executable).parent / "wassette-state"
    return str(here) if here.exists() else shutil.which("wassette-state") or "wassette-state"


class Site:
    """A scratch store and a Wassette serving its dirs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("home", "xdg-data", "xdg-config", "components", "secrets"):
            (root / d).mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
        base.update(
            HOME=str(root / "home"),
            XDG_DATA_HOME=str(root / "xdg-data"),
            XDG_CONFIG_HOME=str(root / "xdg-config"),
            WASSETTE_COMPONENT_DIR=str(root / "components"),
            WASSETTE_SECRETS_DIR=str(root / "secrets"),
        )
        self.environ = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = root / "wassette.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(TOOL),
                    "serve",
                    "--streamable-http",
                    "--bind-address",
                    f"127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=base,
                cwd=root,
            )
        deadline = time.monotonic() + 120
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"wassette serve did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def run(self, *args: str, url: str) -> float:
        """Run the CLI; the monotonic time of its exit."""
        env = {**self.environ, "WASSETTE_STATE_DB": str(self.root / "state.db")}
        env["WASSETTE_STATE_WASSETTE_URL"] = url
        done = subprocess.run([cli(), *args], env=env, capture_output=True, text=True, check=False)
        ended = time.monotonic()
        if done.returncode != 0 or done.stderr:
            raise SystemExit(f"{args}: exit {done.returncode}: {done.stderr.strip()}")
        return ended

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


TRIES: dict[str, list[int]] = {"served": [], "gone": []}


def until(key: str, check: Any, started: float, limit: float = 30.0) -> float:
    """Seconds from `started` until `check()` is true (polled without sleeping); the number
    of checks it took is kept in TRIES (1: served by the time the command exited)."""
    tries = 1
    while not check():
        tries += 1
        if time.monotonic() - started > limit:
            raise SystemExit("not served within 30 s")
    TRIES[key].append(tries)
    return time.monotonic() - started


def measure(site: Site, trials: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        k: [] for k in ("attach_cmd", "attach_cmd_off", "served", "detach_cmd", "gone")
    }
    client = mcp.Client(site.url)
    client.initialize("bench")

    def callable_(tool: str) -> bool:
        try:
            client.call(tool)
            return True
        except mcp.ToolError:
            return False

    def gone(tool: str) -> bool:
        return tool not in client.tool_names() and not callable_(tool)

    for i in range(trials):
        wasm = site.root / f"c{i}.wasm"
        wasm.write_bytes(component(f"t{i}", i))
        # the same command with nothing told, for the cost of telling (then detached again)
        off = site.root / f"off{i}.wasm"
        off.write_bytes(component(f"o{i}", i))
        t0 = time.monotonic()
        samples["attach_cmd_off"].append(site.run("component", "attach", str(off), url="off") - t0)
        site.run("component", "detach", f"off{i}", url="off")

        t0 = time.monotonic()
        ended = site.run("component", "attach", str(wasm), url=site.url)
        samples["attach_cmd"].append(ended - t0)
        samples["served"].append(until("served", lambda i=i: callable_(f"t{i}"), ended))

        t0 = time.monotonic()
        ended = site.run("component", "detach", f"c{i}", url=site.url)
        samples["detach_cmd"].append(ended - t0)
        samples["gone"].append(until("gone", lambda i=i: gone(f"t{i}"), ended))
        print(f"\rtrial {i + 1}/{trials}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    client.close()
    return samples


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


ROWS = [
    ("served", "attach: command exit -> tools/call of the new tool succeeds"),
    ("gone", "detach: command exit -> tool gone (tools/list and tools/call)"),
    ("attach_cmd", "attach command, Wassette told (start -> exit)"),
    ("attach_cmd_off", "attach command, nothing told (--wassette-url off)"),
    ("detach_cmd", "detach command, Wassette told (start -> exit)"),
]


def table(samples: dict[str, list[float]]) -> str:
    width = max(len(label) for _, label in ROWS)
    lines = [f"{'figure':<{width}}  {'n':>4}  {'median':>9}  {'p95':>9}  first check ok"]
    for key, label in ROWS:
        values = samples[key]
        tries = TRIES.get(key)
        first = f"{sum(t == 1 for t in tries)}/{len(tries)}" if tries else "-"
        lines.append(
            f"{label:<{width}}  {len(values):>4}  {statistics.median(values) * 1000:>7.1f}ms"
            f"  {p95(values) * 1000:>7.1f}ms  {first:>14}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_serve", description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="samples as JSON on stdout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="live-serve-") as tmp:
        site = Site(Path(tmp))
        try:
            samples = measure(site, args.trials)
        finally:
            site.stop()
    print(table(samples), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        summary = {
            k: {"median": statistics.median(v), "p95": p95(v), "samples": v}
            for k, v in samples.items()
        }
        json.dump({"trials": args.trials, "figures": summary, "tries": TRIES}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
