"""Time `state copy`: a generated store SQLite → PostgreSQL → SQLite, median of a few runs.

    python -m bench.copy_store --events 10000 --components 200 --runs 3
    WASSETTE_BENCH_PG=postgresql://postgres@127.0.0.1:5432/postgres (the default) names the
    server; a database is created for each run and dropped afterwards.

Each run copies into a fresh destination (a new PostgreSQL database, a new SQLite file) with
the library call the CLI makes (`store.copy.copy_store`: verify the source, copy the rows in
batches, rebuild and verify the copy, all in one destination transaction), then once more
through the installed CLI, start-up included. Prints one JSON object of medians (seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get("WASSETTE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(ADMIN_URL)
    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )


def _new_database(admin: Any) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"wst_bench_copy_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return name, make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _settings(url: str, root: Path) -> Any:
    from wassette_state.store.files.config import resolve

    return resolve(url, str(root / "components"), str(root / "secrets"), "bench@copy")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.copy_store")
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--components", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    from bench.generate import ensure
    from wassette_state.store.usecases.copy import copy_store

    entry, stats = ensure(args.components, args.events, progress=False)
    source = _settings(str(entry / "state.db"), entry)
    admin = _admin()
    made: list[str] = []
    timings: dict[str, list[float]] = {"sqlite_to_postgres": [], "postgres_to_sqlite": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-copy-") as tmp:
            for run in range(args.runs):
                name, url = _new_database(admin)
                made.append(name)
                start = time.perf_counter()
                done = copy_store(source, url)
                timings["sqlite_to_postgres"].append(time.perf_counter() - start)
                back = Path(tmp) / f"back-{run}" / "state.db"
                pg = dataclasses.replace(source, db_url=url)
                start = time.perf_counter()
                copy_store(pg, f"sqlite:///{back}")
                timings["postgres_to_sqlite"].append(time.perf_counter() - start)
            name, url = _new_database(admin)
            made.append(name)
            exe = str(Path(sys.executable).parent / "wassette-state")
            environ = {**os.environ, "WASSETTE_STATE_DB": str(entry / "state.db")}
            start = time.perf_counter()
            subprocess.run([exe, "state", "copy", "--to", url], check=True, env=environ)
            cli_seconds = time.perf_counter() - start
    finally:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(
        json.dumps(
            {
                "events": done.events,
                "transactions": done.transactions,
                "contents": done.contents,
                "runs": args.runs,
                **{k: round(statistics.median(v), 2) for k, v in timings.items()},
                "cli_sqlite_to_postgres": round(cli_seconds, 2),
                "load_average": os.getloadavg()[0],
                "generated": {k: stats.get(k) for k in ("events", "transactions")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
