"""Commands that change state: validate input, decide events (pure closures), execute.

Each function validates everything before it writes anything, so a refused command leaves the
database and the files byte-identical.
"""

from __future__ import annotations

import json
import logging
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import (
    NotFound,
    StoreError,
    ValidationError,
    unknown_component,
)
from wassette_state.store.domain.state import Component, State, check_env_key, check_id
from wassette_state.store.files import fsutil, materialize
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.usecases.service import Decision, Outcome, Store

MAX_WASM_BYTES = 512 * 1024 * 1024
MAX_POLICY_BYTES = 1024 * 1024


# ------------------------------------------------------------------ inputs


def local_path(source: str, what: str = "file") -> Path:
    """A path or file:// URI → an existing regular file (other schemes need a network)."""
    if "://" in source:
        parsed = urlparse(source)
        if parsed.scheme != "file":
            raise ValidationError(
                f"unsupported {what} source {source!r}: only local paths and file:// URIs"
            )
        if parsed.netloc not in ("", "localhost"):
            raise ValidationError(f"unsupported {what} URI {source!r}: remote file host")
        path = Path(unquote(parsed.path))
    else:
        path = Path(source)
    path = path.expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValidationError(f"{what} not found: {path}") from None
    except OSError as e:
        raise ValidationError(f"cannot read {what} {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"{path} is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"{path} is not a regular file")
    return path.resolve()


def read_limited(path: Path, limit: int, what: str) -> bytes:
    if path.stat().st_size > limit:
        raise ValidationError(f"{what} {path} is larger than {limit // (1024 * 1024)} MiB")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValidationError(f"cannot read {what} {path}: {e.strerror}") from None


def parse_assignments(items: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    """`KEY=VALUE` arguments; malformed ones are refused without echoing any value."""
    out: dict[str, str] = {}
    if not items:
        raise ValidationError(f"no {what} given: expected KEY=VALUE")
    for i, item in enumerate(items, 1):
        if "=" not in item:
            raise ValidationError(f"argument {i}: expected KEY=VALUE, got no '='")
        key, value = item.split("=", 1)
        check_env_key(key, f"argument {i}")
        if "\x00" in value:
            raise ValidationError(f"argument {i} ({key}): value contains a NUL byte")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes from the command line; never echoed
            raise ValidationError(f"argument {i} ({key}): value is not valid UTF-8") from None
        if key in out:
            raise ValidationError(f"argument {i}: {key} given twice")
        out[key] = value
    return out


def parse_assignment_lines(text: str, what: str) -> dict[str, str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return parse_assignments(lines, what)


def _require(state: State, component_id: str) -> Component:
    comp = state.components.get(component_id)
    if comp is None:
        raise unknown_component(component_id)
    return comp


# ------------------------------------------------------------------ components


@dataclass(frozen=True)
class Loaded:
    """A component file read and introspected, ready to be decided on."""

    component_id: str
    source_uri: str
    data: bytes
    sha256: str
    mtime: int
    tools: Any  # store.wasm.Introspection


def load_component(store: Store, source: str, component_id: str | None = None) -> Loaded:
    path = local_path(source, "component file")
    cid = check_id(component_id if component_id is not None else path.stem, "component id")
    data = read_limited(path, MAX_WASM_BYTES, "component file")
    digest = materialize.sha256_hex(data)
    tools = adoptable_tools(store, path, cid, digest)
    if tools is None:
        tools = introspect_cached(store, data, digest, path.name)
    return Loaded(cid, path.as_uri(), data, digest, int(path.stat().st_mtime), tools)


def adoptable_tools(store: Store, path: Path, cid: str, digest: str) -> Any:
    """Tools from a Wassette-written metadata file that vouches for these bytes, or None.

    Looked for beside the source (attaching from a Wassette component dir) and in the
    component dir under the id, when the wasm there holds the same bytes (Wassette loaded
    them first). Its stamp is checked as Wassette checks it (DESIGN §7).
    """
    from wassette_state.store.files.metadata_files import tools_of, valid_beside

    candidates = [(path.with_name(f"{path.stem}.metadata.json"), path)]
    target = store.settings.component_dir / f"{cid}.wasm"
    if target != path:
        on_disk = fsutil.read_if_file(target)
        if on_disk is not None and materialize.sha256_hex(on_disk) == digest:
            candidates.append((target.with_name(f"{cid}.metadata.json"), target))
    for meta, wasm in candidates:
        doc = valid_beside(meta, wasm, digest)
        if doc is not None:
            return tools_of(doc)
    return None


def introspect_cached(store: Store, data: bytes, digest: str, label: str) -> Any:
    """Introspection is pure in the bytes: cache it on disk by sha256 across processes."""
    from wassette_state.store.files import wasm

    # Keyed by the derivation's version too: a store made by an older derivation must not
    # keep serving tools the way Wassette no longer derives them.
    cache = (
        store.settings.data_dir / "cache" / f"tools-v{wasm.DERIVATION_VERSION}" / f"{digest}.json"
    )
    raw = fsutil.read_if_file(cache) if fsutil.private_file(cache) else None
    if raw is not None:
        try:
            doc = json.loads(raw)
            return wasm.Introspection(
                doc["tool_schemas"], doc["function_identifiers"], doc["tool_names"]
            )
        except (ValueError, KeyError, TypeError):
            pass
    result = wasm.describe(data, label=label)
    fsutil.ensure_dir(cache.parent)
    fsutil.atomic_write(
        cache,
        json.dumps(
            {
                "tool_schemas": result.tool_schemas,
                "function_identifiers": result.function_identifiers,
                "tool_names": result.tool_names,
            }
        ).encode(),
    )
    return result


def _check_secrets_name(ids: set[str], component_id: str) -> None:
    """Wassette names secrets files by a sanitized id (`a_b` and `a__b` share `a_b.yaml`):
    refuse a component that would share another's secrets."""
    mine = secret_files.sanitize(component_id)
    for other in ids:
        if other != component_id and secret_files.sanitize(other) == mine:
            raise ValidationError(
                f"component id {component_id!r} would share the secrets file {mine}.yaml with "
                f"component {other!r}; choose another --id"
            )


def metadata_doc(
    component_id: str, tools: Any, size: int, mtime: int, sha256: str, created_at: int
) -> dict[str, Any]:
    """Wassette's ComponentMetadata for introspected bytes (attach, import, drift)."""
    return {
        "component_id": component_id,
        "tool_schemas": tools.tool_schemas,
        "function_identifiers": tools.function_identifiers,
        "tool_names": tools.tool_names,
        "validation_stamp": {"file_size": size, "mtime": mtime, "content_hash": sha256},
        "created_at": created_at,
    }


def _check_secrets_names(ids: set[str]) -> None:
    """The same check for many ids at once, in one pass (imports of thousands)."""
    seen: dict[str, str] = {}
    for cid in sorted(ids):
        mine = secret_files.sanitize(cid)
        if mine in seen:
            raise ValidationError(
                f"component id {cid!r} would share the secrets file {mine}.yaml with "
                f"component {seen[mine]!r}; choose another --id"
            )
        seen[mine] = cid


def build_metadata(loaded: Loaded, created_at: int) -> dict[str, Any]:
    return metadata_doc(
        loaded.component_id,
        loaded.tools,
        len(loaded.data),
        loaded.mtime,
        loaded.sha256,
        created_at,
    )


@dataclass(frozen=True)
class PolicyInput:
    source_uri: str
    content: str


def load_policy(source: str) -> PolicyInput:
    from wassette_state.store.domain.policy_text import parse_policy

    path = local_path(source, "policy file")
    raw = read_limited(path, MAX_POLICY_BYTES, "policy file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"policy file {path} is not UTF-8 text") from None
    parse_policy(text)
    return PolicyInput(path.as_uri(), text)


def attach(
    store: Store, source: str, component_id: str | None = None, policy_file: str | None = None
) -> Outcome:
    # The policy first: a refusal must not leave even an introspection cache entry behind.
    policy = load_policy(policy_file) if policy_file else None
    path = local_path(source, "component file")
    _check_secrets_name(store.component_ids(), component_id or path.stem)
    loaded = load_component(store, source, component_id)
    now = int(time.time())

    def decide(state: State) -> Decision:
        _check_secrets_name(set(state.components), loaded.component_id)
        existing = state.components.get(loaded.component_id)
        out: list[ev.Event] = []
        if existing is None or existing.wasm_sha256 != loaded.sha256:
            out.append(
                ev.ComponentAttached(
                    component_id=loaded.component_id,
                    source_uri=loaded.source_uri,
                    wasm_sha256=loaded.sha256,
                    metadata=build_metadata(loaded, now),
                )
            )
        if policy is not None and (
            existing is None
            or existing.policy is None
            or existing.policy.policy_content != policy.content
            or existing.policy.source_uri != policy.source_uri
        ):
            out.append(
                ev.PolicyAttached(
                    component_id=loaded.component_id,
                    source_uri=policy.source_uri,
                    policy_content=policy.content,
                    attached_at=now,
                )
            )
        return Decision(
            out,
            summary={
                "component_id": loaded.component_id,
                "tools": len(loaded.tools.tool_names),
                "unchanged": not out,
            },
        )

    store.blobs.put(loaded.data, loaded.sha256)
    outcome = store.execute(
        f"component attach {loaded.source_uri} --id {loaded.component_id}", decide
    )
    if outcome.tx_id is None:
        # Nothing to record, but after `attach` the component's files must be there (someone
        # may have removed them): materializing writes only what differs.
        store.materialize({loaded.component_id})
    return outcome


def detach(store: Store, component_id: str, keep_secret_values: bool = False) -> Outcome:
    """The component leaves the state with its files and, unless `keep_secret_values`, its
    secrets file: a component attached later under this id inherits no values."""
    from wassette_state.store.files import staging

    check_id(component_id)

    def decide(state: State) -> Decision:
        _require(state, component_id)
        return Decision([ev.ComponentDetached(component_id=component_id)])

    return store.execute(
        f"component detach {component_id}"
        + (" --keep-secret-values" if keep_secret_values else ""),
        decide,
        scope={component_id},
        stage=staging.SecretsChange(
            store, staging.leaving_values(store, keep_secret_values), keep_secret_values
        ),
    )


# ------------------------------------------------------------------ policies


def policy_attach(store: Store, component_id: str, source: str) -> Outcome:
    check_id(component_id)
    policy = load_policy(source)
    now = int(time.time())

    def decide(state: State) -> Decision:
        comp = _require(state, component_id)
        if comp.policy and (comp.policy.policy_content, comp.policy.source_uri) == (
            policy.content,
            policy.source_uri,
        ):
            return Decision([], summary={"unchanged": True})
        return Decision(
            [
                ev.PolicyAttached(
                    component_id=component_id,
                    source_uri=policy.source_uri,
                    policy_content=policy.content,
                    attached_at=now,
                )
            ]
        )

    return store.execute(
        f"policy attach {component_id} {policy.source_uri}", decide, scope={component_id}
    )


def policy_detach(store: Store, component_id: str) -> Outcome:
    check_id(component_id)

    def decide(state: State) -> Decision:
        comp = _require(state, component_id)
        if comp.policy is None:
            raise NotFound(f"component {component_id!r} has no policy attached")
        return Decision([ev.PolicyDetached(component_id=component_id)])

    return store.execute(f"policy detach {component_id}", decide, scope={component_id})


def permission(
    store: Store,
    op: str,
    component_id: str,
    kind: str | None = None,
    value: str | None = None,
    access: list[str] | None = None,
) -> Outcome:
    """grant / revoke / reset as `policy.changed`; safe to re-decide, so it retries."""
    from wassette_state.store.domain.policy_edit import grant, revoke

    check_id(component_id)
    component_dir = store.settings.component_dir
    now = int(time.time())

    def decide(state: State) -> Decision:
        comp = _require(state, component_id)
        content = comp.policy.policy_content if comp.policy else None
        if op == "grant":
            assert kind is not None and value is not None
            new, change = grant(content, component_id, kind, value, access)
        elif op == "revoke":
            assert kind is not None and value is not None
            new, change = revoke(content, component_id, kind, value, access)
        else:
            # As Wassette's reset does: the policy goes away (file and meta), not just its
            # permissions.
            change = {"op": "reset"}
            if comp.policy is None:
                return Decision([], summary={"unchanged": True, "change": change})
            return Decision(
                [ev.PolicyDetached(component_id=component_id)], summary={"change": change}
            )
        if new == content:
            return Decision([], summary={"unchanged": True, "change": change})
        creating = comp.policy is None
        policy_path = component_dir / f"{component_id}.policy.yaml"
        return Decision(
            [
                ev.PolicyChanged(
                    component_id=component_id,
                    policy_content=new,
                    change=change,
                    source_uri=policy_path.as_uri() if creating else None,
                    attached_at=now if creating else None,
                )
            ],
            summary={"change": change},
        )

    words = " ".join(x for x in (op, kind or "", component_id, value or "") if x)
    if access:
        words += f" --access {','.join(access)}"
    # Validate before touching anything (the decide closure re-validates on the live state).
    decide(store.state(scope={component_id}))
    return store.execute(f"permission {words}", decide, retry=True, scope={component_id})


# ------------------------------------------------------------------ secrets


def refuse_assignment_as_id(component_id: str) -> None:
    """`secret set KEY=VALUE …` with the id forgotten: say so without repeating the argument,
    which holds a value."""
    if "=" in component_id:
        raise ValidationError(
            "the first argument must be the component id, not a KEY=VALUE assignment "
            "(arguments are not shown: they may hold secret values)"
        )


def secret_set(store: Store, component_id: str, values: dict[str, str]) -> Outcome:
    """Values to the secrets file, key names to the log, as one two-phase change: the new file
    is staged before the commit and put in place after it (store.staging)."""
    from wassette_state.store.files import staging

    refuse_assignment_as_id(component_id)
    check_id(component_id)
    store.component(component_id)
    store.check_dirs()
    store.repair_files()
    secrets_dir = store.settings.secrets_dir
    staging.refuse_link(secrets_dir, component_id)
    keys = sorted(values)

    def decide(state: State) -> Decision:
        _require(state, component_id)
        return Decision(
            [ev.SecretKeysSet(component_id=component_id, keys=keys)],
            summary={"component_id": component_id, "keys": keys},
        )

    def plan(base: State, events: list[ev.Event]) -> staging.Plan:
        # Read under the secrets lock: two `secret set` at once must not lose a value.
        return {component_id: {**secret_files.read_values(secrets_dir, component_id), **values}}

    return store.execute(
        f"secret set {component_id} {' '.join(keys)}",
        decide,
        retry=True,
        scope={component_id},
        stage=staging.SecretsChange(store, plan),
    )


def secret_delete(store: Store, component_id: str, keys: list[str]) -> Outcome:
    from wassette_state.store.files import staging

    refuse_assignment_as_id(component_id)
    check_id(component_id)
    if not keys:
        raise ValidationError("no keys given")
    for i, k in enumerate(keys, 1):
        if "=" in k:  # KEY=VALUE where a key name belongs: never repeated
            raise ValidationError(f"key {i}: a key name, not KEY=VALUE (argument not shown)")
        check_env_key(k, f"key {i}")
    store.check_dirs()
    store.repair_files()
    secrets_dir = store.settings.secrets_dir
    comp = _require(store.state(scope={component_id}), component_id)
    on_disk = secret_files.read_values(secrets_dir, component_id)
    unknown = [k for k in keys if k not in comp.secret_keys and k not in on_disk]
    if unknown:
        raise NotFound(f"component {component_id!r} has no secret {unknown[0]!r}")
    if set(keys) & set(on_disk):
        staging.refuse_link(secrets_dir, component_id)
    gone = set(keys)

    def decide(state: State) -> Decision:
        current = _require(state, component_id)
        declared = sorted(k for k in gone if k in current.secret_keys)
        out: list[ev.Event] = []
        if declared:
            out.append(ev.SecretKeysDeleted(component_id=component_id, keys=declared))
        return Decision(out, summary={"component_id": component_id, "keys": sorted(gone)})

    def plan(base: State, events: list[ev.Event]) -> staging.Plan:
        values = secret_files.read_values(secrets_dir, component_id)
        if not gone & set(values):
            return {}
        return {component_id: {k: v for k, v in values.items() if k not in gone}}

    with staging.locked(store):
        outcome = store.execute(
            f"secret delete {component_id} {' '.join(keys)}",
            decide,
            retry=True,
            scope={component_id},
            stage=staging.SecretsChange(store, plan),
        )
        if outcome.tx_id is None:
            # Only values the log never declared (added by hand): no transaction to stage for.
            remaining = plan(outcome.state, [])
            if remaining:
                secret_files.write_values(secrets_dir, component_id, remaining[component_id])
    return outcome


@dataclass(frozen=True)
class SecretEntry:
    key: str
    declared: bool
    has_value: bool
    value: str | None


def secret_list(store: Store, component_id: str, show_values: bool = False) -> list[SecretEntry]:
    from wassette_state.store.files import staging

    refuse_assignment_as_id(component_id)
    check_id(component_id)
    try:  # a change an interrupted command committed is read, not the old file
        staging.recover(store)
    except StoreError as e:  # a read goes on (a read-only copy): the next change settles it
        logging.getLogger("wassette").warning("%s", e)
    comp = _require(store.state(scope={component_id}), component_id)
    values = secret_files.read_values(store.settings.secrets_dir, component_id)
    keys = sorted(set(comp.secret_keys) | set(values))
    return [
        SecretEntry(
            key=k,
            declared=k in comp.secret_keys,
            has_value=k in values,
            value=values.get(k) if show_values else None,
        )
        for k in keys
    ]


# ------------------------------------------------------------------ environment


def env_set(store: Store, values: dict[str, str]) -> Outcome:
    def decide(state: State) -> Decision:
        changed: list[ev.Event] = [
            ev.EnvSet(key=k, value=v)
            for k, v in sorted(values.items())
            if state.environment.get(k) != v
        ]
        return Decision(changed, summary={"keys": sorted(values)})

    return store.execute(f"env set {' '.join(sorted(values))}", decide, retry=True, scope=set())


def env_unset(store: Store, keys: list[str]) -> Outcome:
    if not keys:
        raise ValidationError("no keys given")
    for i, k in enumerate(keys, 1):
        if "=" in k:  # KEY=VALUE where a name belongs: never repeated
            raise ValidationError(f"key {i}: a variable name, not KEY=VALUE (argument not shown)")
        check_env_key(k, f"key {i}")
    environment = store.state(scope=set()).environment  # one read for all keys, not one per key
    missing = [k for k in keys if k not in environment]
    if missing:
        raise NotFound(f"environment variable {missing[0]!r} is not set")

    def decide(state: State) -> Decision:
        return Decision(
            [ev.EnvUnset(key=k) for k in sorted(set(keys)) if k in state.environment],
            summary={"keys": sorted(set(keys))},
        )

    return store.execute(f"env unset {' '.join(keys)}", decide, retry=True, scope=set())


def secrets_needed(
    store: Store, state: State, ids: list[str] | None = None
) -> dict[str, list[str]]:
    """Declared secret keys with no value on disk, per component."""
    out: dict[str, list[str]] = {}
    for cid in sorted(ids if ids is not None else state.components):
        comp = state.components.get(cid)
        if comp is None or not comp.secret_keys:
            continue
        values = secret_files.read_values(store.settings.secrets_dir, cid)
        missing = [k for k in comp.secret_keys if k not in values]
        if missing:
            out[cid] = missing
    return out


def secret_set_command(component_id: str, keys: list[str], prefix: str = "wassette") -> str:
    """The exact command that supplies the missing values. They go on its stdin, never on its
    command line (other local users read that in /proc while it runs); see `secret_set_input`."""
    import shlex

    return f"{prefix} secret set {shlex.quote(component_id)} --stdin"


def secret_set_input(keys: list[str]) -> str:
    """What `secret_set_command` reads: one `KEY=…` line per key, `…` to replace by the value."""
    return "".join(f"{k}=…\n" for k in keys)


def secret_set_hint(component_id: str, keys: list[str], prefix: str = "wassette") -> str:
    """One line for humans: the command, and what to type into it."""
    return (
        f"{secret_set_command(component_id, keys, prefix)}   "
        f"# then type {', '.join(f'{k}=…' for k in keys)} (one per line), Ctrl-D"
    )
