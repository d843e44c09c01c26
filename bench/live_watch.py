"""Wassette-made change → recorded in the log, with `wassette-state watch` running.

    python -m bench.live_watch                 # 60 trials, default debounce
    python -m bench.live_watch --trials 200 --debounce 50 --json

The real Wassette 0.8.0 CLI (../shared/tools/real-wassette; set REAL_WASSETTE_CACHE) changes a
component's files (grant, secret set, revoke, secret delete, unload, load, in turn), while a real
`wassette-state watch` subprocess runs on the same dirs. A trial's latency is from the
Wassette process's exit (its change is on disk) to the commit time (`recorded_at`) of the
`sync` transaction that records it, so polling the log adds nothing to it. Figures are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import Env  # noqa: E402
from real_wassette import RealWassette  # noqa: E402
from wasm_fixtures import write_component  # noqa: E402
from watch_process import WatchProcess, last_tx, wait_for  # noqa: E402

OPS = (
    ("grant network", lambda i: ("permission", "grant", "network", "fetch", f"h{i}.example.com")),
    ("secret set", lambda i: ("secret", "set", "fetch", f"K{i}=value-{i}")),
    ("revoke network", lambda i: ("permission", "revoke", "network", "fetch", f"h{i}.example.com")),
    ("secret delete", lambda i: ("secret", "delete", "fetch", f"K{i}")),
    ("component unload", lambda i: ("component", "unload", "fetch")),
    ("component load", lambda i: ("component", "load", WASM.as_uri())),
)
EXPECTED = {
    "grant network": "policy.",  # policy.attached the first time, policy.changed after
    "secret set": "secret.keys_set",
    "revoke network": "policy.changed",
    "secret delete": "secret.keys_deleted",
    "component unload": "component.detached",
    "component load": "component.attached",
}
WASM = Path(tempfile.gettempdir()) / "live-watch" / "fetch.wasm"  # written by `run`


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(trials: int, debounce: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="live-watch-") as tmp:
        env = Env(Path(tmp))
        wassette = RealWassette(env)
        WASM.parent.mkdir(exist_ok=True)
        write_component(WASM, "simple")
        wassette.ok("component", "load", WASM.as_uri())
        args = ("--debounce", str(debounce)) if debounce is not None else ()
        samples: dict[str, list[float]] = {name: [] for name, _ in OPS}
        durations: list[float] = []
        with WatchProcess(env, args) as watch:
            for i in range(trials):
                name, make = OPS[i % len(OPS)]
                before = last_tx(env.db)
                started = time.monotonic()
                wassette.ok(*make(i // len(OPS)))
                done = time.time()
                durations.append(time.monotonic() - started)
                txs = _wait(env, before, EXPECTED[name])
                samples[name].append(txs[-1].recorded_at_us / 1e6 - done)
            code, _ = watch.stop()
        if code != 0:
            raise SystemExit(f"watch exited {code}: {watch.stderr[-2000:]}")
        everything = [v for vs in samples.values() for v in vs]
        rows = {
            name: {
                "n": len(vs),
                "median_ms": statistics.median(vs) * 1000,
                "p95_ms": p95(vs) * 1000,
                "max_ms": max(vs) * 1000,
            }
            for name, vs in samples.items()
            if vs
        }
        rows["all"] = {
            "n": len(everything),
            "median_ms": statistics.median(everything) * 1000,
            "p95_ms": p95(everything) * 1000,
            "max_ms": max(everything) * 1000,
        }
        return {
            "trials": trials,
            "debounce_ms": debounce,
            "wassette_cli_median_ms": statistics.median(durations) * 1000,
            "latency": rows,
        }


def _wait(env: Env, before: int, prefix: str) -> list[Any]:
    """The transactions after `before` once one has an event of the expected kind."""
    deadline = time.monotonic() + 30
    while True:
        txs = wait_for(env.db, before, set(), timeout=30)
        if any(t.startswith(prefix) for tx in txs for t in tx.types):
            return txs
        if time.monotonic() > deadline:
            raise SystemExit(f"not recorded within 30 s: {prefix}")
        time.sleep(0.005)


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Wassette change -> recorded by `watch` ({result['trials']} trials, debounce "
        f"{result['debounce_ms'] if result['debounce_ms'] is not None else '100 (default)'} ms; "
        f"Wassette CLI itself: median {result['wassette_cli_median_ms']:.0f} ms)",
        f"{'change':<16} {'n':>4} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}",
    ]
    for name, row in result["latency"].items():
        lines.append(
            f"{name:<16} {row['n']:>4} {row['median_ms']:>10.0f} {row['p95_ms']:>8.0f} "
            f"{row['max_ms']:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.live_watch", description=__doc__)
    parser.add_argument("--trials", type=int, default=60, help="a multiple of 6 is fair")
    parser.add_argument("--debounce", type=int, default=None, metavar="MS")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    opts = parser.parse_args(argv)
    result = run(opts.trials, opts.debounce)
    if opts.json:
        print(json.dumps(result, indent=2))
        print(table(result), file=sys.stderr)
    else:
        print(table(result))


if __name__ == "__main__":
    main()
