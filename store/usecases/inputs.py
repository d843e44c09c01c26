"""What commands read from the user before they decide anything: files and URIs, KEY=VALUE
assignments, component bytes (introspected once per content hash) and policy documents.

Everything here refuses bad input with a ValidationError before any write."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from wassette_state.store.domain.errors import ValidationError, unknown_component
from wassette_state.store.domain.state import Component, State, check_env_key, check_id
from wassette_state.store.files import fsutil, materialize
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.usecases.service import Store

MAX_WASM_BYTES = 512 * 1024 * 1024


MAX_POLICY_BYTES = 1024 * 1024


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


def check_secrets_name(ids: set[str], component_id: str) -> None:
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


def check_secrets_names(ids: set[str]) -> None:
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


def require_component(state: State, component_id: str) -> Component:
    comp = state.components.get(component_id)
    if comp is None:
        raise unknown_component(component_id)
    return comp
