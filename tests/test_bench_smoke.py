"""The benchmark harness runs end to end (`python -m bench --quick`).

A smoke check only: it proves every figure can be measured and is reported. It never looks at
a timing against a target — performance targets live in bench/, not in the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
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
    assert doc["mode"] == "quick"
    assert doc["errors"] == {}
    figures = {f["id"]: f for f in doc["figures"]}
    missing = [i for i in doc["expected"] if i not in figures]
    assert not missing, f"figures not reported: {missing}"
    for fid in doc["expected"]:
        f = figures[fid]
        assert f["samples"], fid
        assert f["value"] > 0, fid
        assert all(s > 0 for s in f["samples"]), fid
    # The limit (raw sqlite3) is measured in the same run for every append and read figure.
    for fid in ("append_single", "append_batch", "state_at", "rebuild", "history"):
        assert figures[fid]["limit"] and figures[fid]["limit"] > 0, fid
        assert figures[fid]["vs_limit"] and figures[fid]["vs_limit"] > 0, fid
    for fid in ("cold_help", "cold_list"):
        assert figures[fid]["limit"] and figures[fid]["limit"] > 0, fid
    # The peer is measured whenever it is installed (the test and bench extras install it).
    try:
        import eventsourcing  # noqa: F401
    except ImportError:
        return
    for fid in ("append_single", "append_batch", "history"):
        assert figures[fid]["peer"] and figures[fid]["peer"] > 0, fid
        assert figures[fid]["vs_peer"] and figures[fid]["vs_peer"] > 0, fid
    assert figures["append_single"]["details"]["peer_synchronous"] == 2  # FULL: durable too
