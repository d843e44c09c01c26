"""The backend benchmark runs end to end on both backends (`python -m bench.backends --quick`).

A smoke check only: it proves every figure is measured on SQLite, on PostgreSQL and (where it
has one) for the peer, eventsourcing's PostgreSQL recorder, and that the run leaves none of its
databases behind. It never looks at a timing against a target — performance targets live in
bench/, not in the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import Server

REPO = Path(__file__).resolve().parents[1]


def _bench_databases(server: Server) -> set[str]:
    rows = server.conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'wst\\_bench\\_%'"
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.slow
def test_quick_backend_benchmark_measures_both_backends_and_the_peer(tmp_path: Path) -> None:
    server = Server.connect()
    try:
        before = _bench_databases(server)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.backends",
                "--quick",
                "--json",
                "--no-progress",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--work-dir",
                str(tmp_path / "work"),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        doc = json.loads(proc.stdout)
        # Every database the run created is gone (the server's others were never touched).
        assert _bench_databases(server) == before
    finally:
        server.close()
    assert doc["mode"] == "quick"
    assert doc["errors"] == {}
    rows = {r["id"]: r for r in doc["rows"]}
    assert set(doc["expected"]) == set(rows)
    for rid, row in rows.items():
        for system in ("sqlite", "postgres"):
            cell = row["systems"][system]
            assert cell["n"] > 0 and cell["median_ms"] > 0 and cell["p99_ms"] >= cell["median_ms"]
        assert row["postgres_vs_sqlite"] and row["postgres_vs_sqlite"] > 0, rid
    for rid in ("writes_1", "writes_4", "writes_4_shared", "import"):
        systems = rows[rid]["systems"]
        assert set(systems) == {"sqlite", "postgres", "peer"}, rid
        for cell in systems.values():
            assert cell["throughput"] and cell["throughput"] > 0, rid
        assert rows[rid]["postgres_vs_peer"] and rows[rid]["postgres_vs_peer"] > 0, rid
    # Every writer of a phase ran every command it was given (4 writers: 4 times as many).
    quick_single, quick_multi, rounds = 10, 5, 1
    assert rows["writes_1"]["systems"]["postgres"]["n"] == quick_single * rounds
    assert rows["writes_4"]["systems"]["postgres"]["n"] == 4 * quick_multi * rounds
    assert rows["writes_4"]["systems"]["peer"]["n"] == 4 * quick_multi * rounds
    assert doc["postgres"]["synchronous_commit"] == "on"  # the peer's commits are durable too
