"""Tell a running Wassette to serve what a command just recorded (DESIGN §9, issue 12.1).

A running Wassette 0.8.0 never watches its dirs. Measured with the real binary (`serve
--streamable-http`, MCP built-in tools), what makes it serve a change:

- `load-component` of `file://<component dir>/<id>.wasm` loads a new component, or reloads a
  loaded one ("component reloaded successfully") from the files as they are now: new bytes
  (their new tools), the policy file, the secrets file. So every change to a component that
  stays (attach, re-attach, policy attach/change, grant, revoke, secret set/delete) is one
  `load-component`. The path is passed as is (no percent-encoding: Wassette does not decode).
- A reload keeps the policy it has in memory when the policy file is gone: a dropped policy is
  `load-component` then `reset-permission` (which, with no policy file, touches no file).
- `unload-component` drops the component AND deletes its files (wasm, cwasm, metadata, policy;
  not the secrets file), and succeeds for an id it does not know. It is called only for an id
  the store says is gone, decided on the state read under the files lock, so a re-attach racing
  the detach is loaded, never unloaded.
- The environment (`--env-file`, `--env`) is read only at start: an `env set|unset` is served
  by a restart (the restart command) or reported.

Where to tell it: `config.live_target` (flag, env var, config.toml `bind_address`). When no
endpoint is set, a restart command serves every change; when neither is set, one `Note:` line
says so. A Wassette that can't be reached or refuses a call is one `Warning:` line: the change
stays recorded and the command exits 0 (the next start of Wassette reads the files anyway).

Hook for other writers (the `watch` command): `tell(store, events, target)` with the events a
transaction appended; it returns the lines to print. Nothing here runs unless a command appended
events, and nothing touches the network unless an endpoint is configured or discovered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wassette_state.store.domain import events as ev

if TYPE_CHECKING:
    from wassette_state.store.files.config import LiveTarget
    from wassette_state.store.persistence.log import StoredEvent
    from wassette_state.store.usecases.service import Store

logger = logging.getLogger("wassette")

CALL_TIMEOUT = 120.0  # a large component compiles during load-component
RESTART_TIMEOUT = 300.0

NOT_CONFIGURED = (
    "Note: no running Wassette was told (set --wassette-url or WASSETTE_STATE_WASSETTE_URL, "
    "bind_address in Wassette's config.toml, or --restart-command; 'off' hides this note)"
)


@dataclass
class Touched:
    """What a batch of events changed that Wassette serves."""

    ids: set[str] = field(default_factory=set)
    policy_dropped: set[str] = field(default_factory=set)
    env_keys: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ids or self.env_keys)


def touched(events: Iterable[StoredEvent]) -> Touched:
    out = Touched()
    for e in events:
        cid = e.component_id
        if e.type in ev.COMPONENT_EVENT_TYPES and cid:
            out.ids.add(cid)
            if e.type == "policy.detached":
                out.policy_dropped.add(cid)
            elif e.type in ("policy.attached", "policy.changed"):
                out.policy_dropped.discard(cid)
        elif e.type in ev.ENV_EVENT_TYPES:
            out.env_keys.add(str(e.data.get("key")))
    return out


@dataclass
class Plan:
    """The MCP calls, in order: unloads, loads, policy resets."""

    unload: list[str] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)

    def calls(self, component_dir: str) -> list[tuple[str, dict[str, str], str]]:
        """(tool, arguments, what it does for messages)."""
        out = [("unload-component", {"id": i}, f"unload {i}") for i in self.unload]
        out += [
            ("load-component", {"path": f"file://{component_dir}/{i}.wasm"}, f"load {i}")
            for i in self.load
        ]
        out += [
            ("reset-permission", {"component_id": i}, f"drop the policy of {i}") for i in self.reset
        ]
        return out


def plan(change: Touched, present: Mapping[str, bool]) -> Plan:
    """`present`: the touched ids that exist now, each with whether it has a policy."""
    out = Plan()
    for cid in sorted(change.ids):
        if cid not in present:
            out.unload.append(cid)
            continue
        out.load.append(cid)
        if not present[cid] and cid in change.policy_dropped:
            out.reset.append(cid)
    return out


def tell(store: Store, events: Iterable[StoredEvent], target: LiveTarget) -> list[str]:
    """Make the running Wassette serve `events`' changes; the lines to print (stderr)."""
    change = touched(events)
    if not change or target.off:
        return []
    if not target.configured:
        return [NOT_CONFIGURED]
    lines: list[str] = []
    restart = target.url is None
    if target.url is not None:
        reached = True
        if change.ids:
            reached, lines = _over_mcp(store, change, target)
        if not reached and target.restart_command is not None:
            restart, lines = True, []
        elif change.env_keys:
            if target.restart_command is not None:
                restart = True
            elif reached:
                keys = ", ".join(sorted(change.env_keys))
                lines.append(
                    f"Warning: Wassette reads its environment only when it starts: restart it "
                    f"to serve {keys} (or set --restart-command)"
                )
    if restart and target.restart_command is not None:
        lines += _restart(target)
    return lines


def _unreachable_line(target: LiveTarget, reason: str) -> str:
    return (
        f"Warning: recorded, but Wassette at {target.url} (from {target.url_from}) could not be "
        f"told: {reason}; it serves the change once it restarts"
    )


def _over_mcp(store: Store, change: Touched, target: LiveTarget) -> tuple[bool, list[str]]:
    """(reached, lines). Decided on the state read under the files lock, so concurrent
    commands tell Wassette in the order their files were written."""
    from wassette_state.store.live import mcp

    assert target.url is not None
    lines: list[str] = []
    with store.files_locked():
        comps = store.state(scope=set(change.ids)).components
        present = {cid: comp.policy is not None for cid, comp in comps.items()}
        todo = plan(change, present).calls(str(store.settings.component_dir))
        try:
            with mcp.Client(target.url, timeout=CALL_TIMEOUT) as client:
                client.initialize()
                for tool, arguments, what in todo:
                    try:
                        client.call(tool, arguments)
                        logger.info("told Wassette at %s to %s", target.url, what)
                    except mcp.ToolError as e:
                        text = str(e).splitlines()[0] if str(e) else "refused"
                        lines.append(f"Warning: Wassette at {target.url} could not {what}: {text}")
        except mcp.McpError as e:
            return False, [_unreachable_line(target, str(e))]
    return True, lines


def _restart(target: LiveTarget) -> list[str]:
    """Run the restart command through the shell; its output goes to stderr (stdout stays
    the command's own, e.g. `-o json`)."""
    import subprocess
    import sys

    assert target.restart_command is not None
    logger.info("running the restart command (from %s)", target.restart_from)
    try:
        sys.stdout.flush()
        done = subprocess.run(
            target.restart_command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            timeout=RESTART_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [
            f"Warning: recorded, but the restart command (from {target.restart_from}) did not "
            f"finish in {RESTART_TIMEOUT:g}s"
        ]
    except OSError as e:
        return [
            f"Warning: recorded, but the restart command (from {target.restart_from}) could not "
            f"run: {e.strerror or e}"
        ]
    if done.returncode != 0:
        return [
            f"Warning: recorded, but the restart command (from {target.restart_from}) exited "
            f"with status {done.returncode}"
        ]
    return []
