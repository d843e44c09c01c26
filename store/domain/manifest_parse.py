"""Parse a manifest: bytes -> a validated `Manifest`, refused as Wassette 0.8.0 refuses it.

Beyond the schema walk (manifest_read): Wassette's own `validate()`, what it would fail on while
provisioning (its policy validation, file uris), and the notes of what the file says that
neither Wassette nor this project keeps.
"""

from __future__ import annotations

import json
import re

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.manifest_model import (
    MANIFEST_VERSION,
    URI_SCHEMES,
    Manifest,
    ManifestComponent,
    Note,
    _stem,
)
from wassette_state.store.domain.manifest_read import _U32, _load, _Walk, _walk_component

_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


def _validate(comps: list[ManifestComponent]) -> None:
    """Wassette's `validate()`: the checks it runs before provisioning anything."""
    if not comps:
        raise ValidationError("manifest: must declare at least one component")
    seen: set[str] = set()
    dups = []
    for c in comps:
        if c.uri in seen:
            dups.append(c.uri)
        seen.add(c.uri)
    if dups:
        raise ValidationError(f"manifest: duplicate component URIs: {', '.join(dups)[:200]}")
    for c in comps:
        w = c.where
        if not c.uri:
            raise ValidationError(f"manifest: {w}.uri: must not be empty")
        if not c.uri.startswith(URI_SCHEMES):
            raise ValidationError(
                f"manifest: {w}.uri: must start with one of {', '.join(URI_SCHEMES)}; got "
                f"{json.dumps(c.uri[:80], ensure_ascii=False)}"
            )
        if c.digest is not None:
            if not c.digest.startswith("sha256:"):
                raise ValidationError(
                    f"manifest: {w}.digest: must be 'sha256:<hex>'; got "
                    f"{json.dumps(c.digest[:80], ensure_ascii=False)}"
                )
            if len(c.digest) - 7 != 64:
                raise ValidationError(
                    f"manifest: {w}.digest: a SHA-256 digest has 64 hex characters, got "
                    f"{len(c.digest) - 7}"
                )
            if not _HEX64_RE.fullmatch(c.digest[7:]):
                raise ValidationError(f"manifest: {w}.digest: only hex characters allowed")
        p = f"{w}.permissions"
        if c.network is not None:
            if not c.network:
                raise ValidationError(f"manifest: {p}.network.allow: must not be empty")
            for i, host in enumerate(c.network):
                if not host:
                    raise ValidationError(f"manifest: {p}.network.allow[{i}].host: empty")
        if c.storage is not None:
            if not c.storage:
                raise ValidationError(f"manifest: {p}.storage.allow: must not be empty")
            for i, rule in enumerate(c.storage):
                where = f"manifest: {p}.storage.allow[{i}]"
                if not rule.uri:
                    raise ValidationError(f"{where}.uri: empty")
                if not rule.uri.startswith("fs://"):
                    raise ValidationError(
                        f"{where}.uri: must start with 'fs://'; got "
                        f"{json.dumps(rule.uri[:80], ensure_ascii=False)}"
                    )
                if not rule.access:
                    raise ValidationError(f"{where}.access: at least one of read, write")
        if c.environment is not None:
            if not c.environment:
                raise ValidationError(f"manifest: {p}.environment.allow: must not be empty")
            keys: set[str] = set()
            for i, env in enumerate(c.environment):
                if not env.key:
                    raise ValidationError(f"manifest: {p}.environment.allow[{i}].key: empty")
                if env.key in keys:
                    raise ValidationError(
                        f"manifest: {p}.environment.allow: duplicate key "
                        f"{json.dumps(env.key[:80], ensure_ascii=False)}"
                    )
                keys.add(env.key)


def check_file_uri(comp: ManifestComponent) -> tuple[str, str]:
    """(path, component id) of a `file://` component, refused as Wassette fails to load it:
    a relative path ("must be fully qualified"), no `.wasm` extension, or an id this project
    refuses everywhere (DESIGN §4.2)."""
    from wassette_state.store.domain.state import check_id

    path = comp.path
    assert path is not None
    where = f"manifest: {comp.where}.uri"
    if not path.startswith("/"):
        raise ValidationError(
            f"{where}: {comp.uri!r} is not an absolute path (file:///abs/path.wasm; Wassette "
            "reads the path as written, without a host)"
        )
    if not path.endswith(".wasm") or path.endswith("/.wasm"):
        raise ValidationError(f"{where}: {comp.uri!r}: a component file must end in .wasm")
    cid = _stem(path)
    check_id(cid, f"{where}: component id (the file stem)")
    return path, cid


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate a manifest as Wassette 0.8.0 does, plus what it would fail on while
    provisioning (its policy validation, file uris). Raises `ValidationError` (one line)."""
    from wassette_state.store.domain.policy_validate import validate_policy

    node = _load(data)
    if node is None:
        raise ValidationError("manifest: the file is empty")
    w = _Walk()
    top = w.fields(
        node, "", "a manifest (a mapping with version and components)", ("version", "components")
    )
    version = w.integer(w.required(top, "version", ""), "version", _U32, "an integer (u32)")
    entries = w.items(w.required(top, "components", ""), "components")
    comps = [_walk_component(w, entry, i) for i, entry in enumerate(entries)]
    if version != MANIFEST_VERSION:
        raise ValidationError(
            f"manifest: unsupported version {version}; only version {MANIFEST_VERSION} is supported"
        )
    _validate(comps)
    ids: dict[str, ManifestComponent] = {}
    for c in comps:
        if c.path is not None:
            _, cid = check_file_uri(c)
            if cid in ids:
                raise ValidationError(
                    f"manifest: {c.where}.uri: component id {cid!r} (the file stem) is also "
                    f"{ids[cid].where}'s; Wassette would load both under one id, the last "
                    "replacing the first"
                )
            ids[cid] = c
        doc = c.policy_doc()
        if doc is not None:
            try:
                validate_policy(doc)
            except ValidationError as e:
                detail = str(e).removeprefix("policy: ")
                raise ValidationError(
                    f"manifest: {c.where}.permissions: Wassette refuses the policy it makes of "
                    f"them: {detail}"
                ) from None
    return Manifest(tuple(comps), tuple(_import_notes(comps, w.notes)))


def _import_notes(
    comps: list[ManifestComponent], unknown: list[tuple[str, str, str]]
) -> list[Note]:
    by_path = {c.where: c.label for c in comps}
    notes: list[Note] = []
    for where, what, detail in unknown:
        label = by_path.get(where.split(".", 1)[0]) if where else None
        notes.append(Note(label, what, f"{detail}: ignored, as Wassette 0.8.0 ignores it"))
    for c in comps:
        cid = c.component_id
        if c.name not in (None, cid) and cid is not None and not c.declares_policy():
            # With a policy the name is kept (its description says it); without, it goes nowhere.
            notes.append(
                Note(
                    cid,
                    "name",
                    f"{c.name!r}: only a label in Wassette's log (no policy is written for it to "
                    f"describe); the component id is the file stem {cid!r}",
                )
            )
        if c.resources:
            given = ", ".join(f"{k}={v}" for k, v in c.resources.items())
            notes.append(
                Note(
                    c.label,
                    "resources",
                    f"{given}: not imported; Wassette 0.8.0 sets no limit from them either",
                )
            )
        for rule in c.environment or ():
            if rule.value_from is not None:
                notes.append(
                    Note(
                        c.label,
                        "value_from",
                        f"{rule.key} from {rule.value_from}: not imported (Wassette 0.8.0 only "
                        "looks the variable up at start-up and stores no secret); set the value "
                        "with 'secret set' if the component needs it",
                    )
                )
        if c.retry_policy:
            notes.append(
                Note(c.label, "retry_policy", "not imported; Wassette 0.8.0 does not use it either")
            )
    return notes
