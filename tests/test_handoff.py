"""The agent-handoff story between two separate store locations, through the installed CLI:
A attaches a component with a policy, sets secrets and env vars, exports; the file is copied;
B imports it, sees which secret values it lacks, runs the exact `secret set` command the import
printed (with values filled in), and ends up with A's state."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, ok
from wassette_state.store.persistence import log
from wassette_state.store.usecases import commands, secret_commands

POLICY = CONFORMANCE / "policies" / "valid" / "example-get-weather-js.yaml"
VALUES = {"API_KEY": "h4ndoff-api-key-value", "OTHER_TOKEN": "h4ndoff-other-token"}
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
LOCAL_KEYS = ("exported_at", "as_of", "store", "paths")
# The printed command must work on its own: no location from the environment.
NO_LOCATION = {"WASSETTE_STATE_DB": "", "WASSETTE_COMPONENT_DIR": "", "WASSETTE_SECRETS_DIR": ""}


def prepare_a(a: Env) -> None:
    src = a.root / "build" / "weather.wasm"
    src.parent.mkdir()
    fx.write_component(src, kind="weather")
    ok(a.run("component", "attach", str(src), "--policy", str(POLICY)))
    ok(a.run("secret", "set", "weather", *(f"{k}={v}" for k, v in VALUES.items())))
    ok(a.run("env", "set", "LOG_LEVEL=debug", "REGION=eu-west"))


def printed_secret_command(output: str) -> tuple[list[str], str]:
    """The `wassette … secret set … --stdin` line of an import summary, and what to type into
    it: the values go on its stdin, never on a command line."""
    lines = [ln.strip() for ln in output.splitlines() if " secret set " in ln]
    assert len(lines) == 1, output
    argv = shlex.split(lines[0], comments=True)
    assert argv[0] == "wassette-state" and argv[-1] == "--stdin"
    assert not any("=" in a for a in argv), argv
    told = lines[0].partition("#")[2]
    assert all(f"{k}=…" in told for k in VALUES), told
    return argv[1:], "".join(f"{k}={v}\n" for k, v in VALUES.items())


def secret_status(env: Env) -> dict[str, bool]:
    doc = json.loads(ok(env.run("secret", "list", "weather", "-o", "json")).out)
    return {s["key"]: s["has_value"] for s in doc["secrets"]}


def test_agent_handoff_between_two_stores(env_factory: Any) -> None:
    a, b = env_factory("a"), env_factory("b")
    prepare_a(a)
    ok(a.run("state", "export", "handoff.yaml", extra_env=EPOCH))
    handed = a.root / "handoff.yaml"
    text = handed.read_text()
    assert not any(v in text for v in VALUES.values())

    inbox = b.root / "inbox"
    inbox.mkdir()
    shutil.copy(handed, inbox / "handoff.yaml")
    imported = ok(b.run("state", "import", str(inbox / "handoff.yaml")))
    assert "recorded as tx 1" in imported.out
    assert not any(v in imported.text for v in VALUES.values())
    assert secret_status(b) == {"API_KEY": False, "OTHER_TOKEN": False}

    argv, typed = printed_secret_command(imported.out)
    ok(b.run(*argv, input=typed, extra_env=NO_LOCATION))
    assert secret_status(b) == {"API_KEY": True, "OTHER_TOKEN": True}

    ok(b.run("state", "export", "b.json", extra_env=EPOCH))
    a_doc = yaml.safe_load(text)  # what A exported
    b_doc = json.loads((b.root / "b.json").read_bytes())
    same = {k: v for k, v in a_doc.items() if k not in LOCAL_KEYS}
    assert {k: v for k, v in b_doc.items() if k not in LOCAL_KEYS} == same
    assert same["components"][0]["secrets"] == {"env_keys": sorted(VALUES)}
    assert same["environment"] == {"LOG_LEVEL": "debug", "REGION": "eu-west"}
    assert same["components"][0]["policy"]["policy_content"] == POLICY.read_text()
    assert b_doc["paths"] == {
        "component_dir": str(b.component_dir),
        "secrets_dir": str(b.secrets_dir),
    }
    assert b_doc["store"]["lineage"] != a_doc["store"]["lineage"]
    # The values are on B's disk, in Wassette's secrets layout, and nowhere in its database.
    assert yaml.safe_load((b.secrets_dir / "weather.yaml").read_text()) == VALUES
    assert not any(v.encode() in b.db.read_bytes() for v in VALUES.values())
    # B's component dir is runnable by Wassette: the same wasm and policy as A's.
    for name in ("weather.wasm", "weather.policy.yaml", "weather.metadata.json"):
        assert (b.component_dir / name).read_bytes() == (a.component_dir / name).read_bytes()


def test_printed_command_keeps_a_custom_component_dir(env_factory: Any, tmp_path: Path) -> None:
    a, b = env_factory("a"), env_factory("b")
    src = tmp_path / "weather.wasm"
    fx.write_component(src, kind="weather")
    store: Any = a.store()
    try:
        commands.attach(store, str(src))
        secret_commands.secret_set(store, "weather", VALUES)
    finally:
        store.close()
    ok(a.run("state", "export", "handoff.json"))
    custom = {"WASSETTE_COMPONENT_DIR": str(b.root / "wassette-components")}
    imported = ok(b.run("state", "import", str(a.root / "handoff.json"), extra_env=custom))
    argv, typed = printed_secret_command(imported.out)
    ok(b.run(*argv, input=typed, extra_env=NO_LOCATION))
    store = b.store()
    try:
        types = [e.type for e in store.history(log.Query())]
    finally:
        store.close()
    assert types.count("paths.set") == 1
