"""Wassette's provisioning manifest (`wassette serve --manifest FILE`), both ways (no I/O).

The manifest is stock Wassette's one declarative input (DESIGN §4.4). What the real Wassette
0.8.0 does with one, as measured (tests/test_manifest_wassette.py checks it against the binary):

- It is read as YAML (so JSON too), as serde reads it: scalars become strings wherever a string
  is expected (`host: 42` is the host "42", `name: yes` the name "yes"), duplicate keys and a
  second document are refused, unknown keys are ignored except inside `permissions`, whose kinds
  are exactly `network`, `storage`, `environment`, `resources`.
- `version: 1` (an integer), at least one component, no uri twice; per component `uri`
  (`file://`, `oci://`, `https://`, `http://`), optional `name`, `digest` (`sha256:` + 64 hex),
  `permissions` (a mapping, each kind optional: a non-empty `allow` list of `{host}`,
  `{uri: fs://…, access: [read|write]}`, `{key, value_from?}` with unique keys;
  `resources: {memory_bytes?, cpu_time_ms?}`), optional `retry_policy`.
- A `file://` uri is a path as written (no percent-decoding, absolute, ending in `.wasm`); the
  component id is the file stem. `name` is only a label: it names the component in Wassette's
  log and in the description of the policy it writes, never the id.
- From network, storage and environment it writes the policy `<id>.policy.yaml` as
  `synthesize_policy` does (same bytes) and replaces any policy the component had. A component
  that declares none of them (`permissions: {}`, or only `resources`) keeps the policy it has,
  and gets none when it has none. `resources`, `value_from` and `retry_policy` change nothing on
  disk; secrets are not seeded (no secrets file is written). `digest` is only logged
  ("Digest verification is not yet implemented"): this project verifies it on import.

`parse_manifest` validates a manifest as Wassette does, and refuses what Wassette would fail to
provision from it (a policy its own validation refuses, a bad file uri). `manifest_doc` turns a
state into a manifest and lists everything the manifest cannot carry (`Note`s): those are
reported by the export, never dropped silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wassette_state.store.domain.errors import ValidationError

MANIFEST_VERSION = 1
URI_SCHEMES = ("file://", "oci://", "https://", "http://")
ACCESS = ("read", "write")
POLICY_DESCRIPTION = "Auto-generated policy for "
DEFAULT_LABEL = "component"  # what Wassette writes after POLICY_DESCRIPTION without a name
POLICY_KINDS = ("network", "storage", "environment")  # the kinds that become a policy
PERMISSION_KINDS = ("network", "storage", "environment", "resources")
MAX_NODES = 1_000_000  # aliases can make a small file huge: bound the values walked
_U32 = 2**32 - 1
_U64 = 2**64 - 1
_NULLS = ("", "~", "null", "Null", "NULL")
_INT_RE = re.compile(r"[-+]?(?:[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")

Format = Literal["json", "yaml"]


@dataclass(frozen=True)
class Note:
    """Something one side cannot carry to the other: reported, never dropped silently."""

    component_id: str | None  # None for the instance (environment variables)
    what: str  # a stable key for scripts, e.g. "secret_keys", "network.deny", "resources"
    detail: str  # one line for people

    def as_dict(self) -> dict[str, Any]:
        return {"component_id": self.component_id, "what": self.what, "detail": self.detail}

    def line(self) -> str:
        head = f"{self.component_id}: " if self.component_id is not None else ""
        return f"{head}{self.what}: {self.detail}"


@dataclass(frozen=True)
class StorageRule:
    uri: str
    access: tuple[str, ...]


@dataclass(frozen=True)
class EnvRule:
    key: str
    value_from: str | None = None


@dataclass(frozen=True)
class ManifestComponent:
    """One validated `components[i]` entry."""

    index: int
    uri: str
    name: str | None = None
    digest: str | None = None  # as written: "sha256:" + 64 hex
    network: tuple[str, ...] | None = None
    storage: tuple[StorageRule, ...] | None = None
    environment: tuple[EnvRule, ...] | None = None
    resources: Mapping[str, int] | None = None  # memory_bytes, cpu_time_ms when given
    retry_policy: bool = False

    @property
    def sha256(self) -> str | None:
        """The digest's hex, lowercase (Wassette takes either case)."""
        return None if self.digest is None else self.digest[len("sha256:") :].lower()

    @property
    def where(self) -> str:
        return f"components[{self.index}]"

    @property
    def path(self) -> str | None:
        """The file a `file://` uri names, as Wassette reads it (no percent-decoding)."""
        return self.uri[len("file://") :] if self.uri.startswith("file://") else None

    @property
    def component_id(self) -> str | None:
        """The id Wassette gives it: the file stem of a `file://` uri (None for others)."""
        path = self.path
        return None if path is None else _stem(path)

    @property
    def label(self) -> str:
        return self.component_id or self.uri

    def declares_policy(self) -> bool:
        return any(getattr(self, kind) is not None for kind in POLICY_KINDS)

    def policy_doc(self) -> dict[str, Any] | None:
        """The policy Wassette synthesizes from the permissions (None: it writes none)."""
        if not self.declares_policy():
            return None
        perms: dict[str, Any] = {}
        if self.network is not None:
            perms["network"] = {"allow": [{"host": h} for h in self.network]}
        if self.storage is not None:
            perms["storage"] = {
                "allow": [{"uri": r.uri, "access": list(r.access)} for r in self.storage]
            }
        if self.environment is not None:
            perms["environment"] = {"allow": [{"key": r.key} for r in self.environment]}
        return {
            "version": "1.0",
            "description": POLICY_DESCRIPTION + (self.name or DEFAULT_LABEL),
            "permissions": perms,
        }

    def policy_text(self) -> str | None:
        """`<id>.policy.yaml` as Wassette 0.8.0 writes it for this component, byte for byte."""
        from wassette_state.store.domain.policy import dump_policy, wassette_form

        doc = self.policy_doc()
        return None if doc is None else dump_policy(wassette_form(doc))


@dataclass(frozen=True)
class Manifest:
    components: tuple[ManifestComponent, ...]
    # What the file says that neither Wassette nor this project keeps (unknown fields,
    # resources, value_from, retry_policy, a name that is not the id).
    notes: tuple[Note, ...] = ()


# ------------------------------------------------------------------ reading


class _Loader(yaml.SafeLoader):
    """Composes nodes only: values are interpreted by the schema walk below, as serde does."""


def _load(data: bytes) -> Node | None:
    if len(data) > 64 * 1024 * 1024:
        raise ValidationError("manifest: larger than 64 MiB")
    raw = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationError(f"manifest: not valid UTF-8 (byte offset {e.start})") from None
    try:
        node: Node | None = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        raise ValidationError(f"manifest: invalid YAML{where}: {problem[:160]}") from None
    except yaml.YAMLError as e:
        raise ValidationError(f"manifest: invalid YAML: {' '.join(str(e).split())[:160]}") from None
    except RecursionError:
        raise ValidationError("manifest: invalid YAML: nesting too deep") from None
    return node


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.style is None and node.value in _NULLS


def _plain_int(node: Node) -> int | None:
    if isinstance(node, ScalarNode) and node.style is None and _INT_RE.fullmatch(node.value):
        text = node.value.lstrip("+")
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        return sign * int(digits)
    return None


def looks_like_manifest(data: bytes) -> bool:
    """Whether a file handed to import is a manifest rather than a state file (4.1): a mapping
    whose `version` is a plain integer, or whose components are all `{uri, …}` entries. A
    state file's version is a string and its components have ids; a file that is neither is
    left to the state file reader's messages."""
    if b"component_id" in data:  # a state file's components (a fast test on large files)
        return False
    try:
        node = _load(data)
    except ValidationError:
        return False
    if not isinstance(node, MappingNode):
        return False
    fields = {k.value: v for k, v in node.value if isinstance(k, ScalarNode)}
    version = fields.get("version")
    if version is not None and _plain_int(version) is not None:
        return True
    comps = fields.get("components")
    return (
        isinstance(comps, SequenceNode)
        and bool(comps.value)
        and all(
            isinstance(c, MappingNode)
            and any(isinstance(k, ScalarNode) and k.value == "uri" for k, _ in c.value)
            for c in comps.value
        )
    )


class _Walk:
    """The schema walk: serde's reading of Wassette's manifest structs, with paths in errors."""

    def __init__(self) -> None:
        self.nodes = 0
        self.notes: list[tuple[str, str, str]] = []  # (component path, what, detail)

    def _count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ValidationError(f"manifest: more than {MAX_NODES:,} values (aliases?)")

    @staticmethod
    def _fail(path: str, message: str) -> ValidationError:
        return ValidationError(f"manifest: {path + ': ' if path else ''}{message}")

    @staticmethod
    def _kind(node: Node) -> str:
        if _is_null(node):
            return "null"
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        assert isinstance(node, ScalarNode)
        shown = node.value if len(node.value) <= 40 else node.value[:39] + "…"
        return f"{json.dumps(shown, ensure_ascii=False)}"

    def fields(
        self,
        node: Node,
        path: str,
        what: str,
        known: tuple[str, ...],
        *,
        strict: bool = False,
        note_as: str = "",
    ) -> dict[str, Node]:
        self._count()
        if not isinstance(node, MappingNode) or _is_null(node):
            raise self._fail(path, f"expected {what}, got {self._kind(node)}")
        out: dict[str, Node] = {}
        names: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self._fail(path, f"mapping keys must be strings, got {self._kind(key)}")
            name = key.value
            if name in names:
                raise self._fail(path, f"duplicate field `{name}`")
            names.add(name)
            if name in known:
                out[name] = value
            elif strict:
                expected = ", ".join(f"`{k}`" for k in known)
                raise self._fail(path, f"unknown field `{name}`, expected one of {expected}")
            else:
                where = f"{path}.{name}" if path else name
                self.notes.append((note_as or path, "unknown_field", where))
        return out

    def required(self, fields: dict[str, Node], name: str, path: str) -> Node:
        if name not in fields:
            raise self._fail(path, f"missing field `{name}`")
        return fields[name]

    def items(self, node: Node, path: str) -> list[Node]:
        self._count()
        if not isinstance(node, SequenceNode):
            raise self._fail(path, f"expected a list, got {self._kind(node)}")
        return list(node.value)

    def string(self, node: Node, path: str) -> str:
        self._count()
        if not isinstance(node, ScalarNode) or _is_null(node):
            raise self._fail(path, f"expected a string, got {self._kind(node)}")
        value = node.value
        if "\x00" in value:
            raise self._fail(path, "contains a NUL character")
        return str(value)

    def opt_string(self, node: Node | None, path: str) -> str | None:
        return None if node is None or _is_null(node) else self.string(node, path)

    def integer(self, node: Node, path: str, limit: int, what: str) -> int:
        self._count()
        value = _plain_int(node)
        if value is None or not 0 <= value <= limit:
            raise self._fail(path, f"expected {what}, got {self._kind(node)}")
        return value


def _walk_component(w: _Walk, node: Node, index: int) -> ManifestComponent:
    path = f"components[{index}]"
    f = w.fields(
        node,
        path,
        "a component (a mapping with uri and permissions)",
        ("uri", "name", "digest", "permissions", "retry_policy"),
    )
    uri = w.string(w.required(f, "uri", path), f"{path}.uri")
    name = w.opt_string(f.get("name"), f"{path}.name")
    digest = w.opt_string(f.get("digest"), f"{path}.digest")
    retry = f.get("retry_policy")
    if retry is not None and not _is_null(retry):
        _walk_retry(w, retry, f"{path}.retry_policy")
    ppath = f"{path}.permissions"
    perms = w.fields(
        w.required(f, "permissions", path),
        ppath,
        "a mapping of permissions",
        PERMISSION_KINDS,
        strict=True,
    )

    def section(kind: str) -> Node | None:
        node = perms.get(kind)
        return None if node is None or _is_null(node) else node

    def allow(kind: str, known: tuple[str, ...]) -> list[dict[str, Node]] | None:
        node = section(kind)
        if node is None:
            return None
        spath = f"{ppath}.{kind}"
        fields = w.fields(node, spath, "a mapping with an allow list", ("allow",), note_as=path)
        rules = w.items(w.required(fields, "allow", spath), f"{spath}.allow")
        return [
            w.fields(r, f"{spath}.allow[{i}]", "a rule (a mapping)", known, note_as=path)
            for i, r in enumerate(rules)
        ]

    network = None
    if (rules := allow("network", ("host",))) is not None:
        network = tuple(
            w.string(
                w.required(r, "host", f"{ppath}.network.allow[{i}]"),
                f"{ppath}.network.allow[{i}].host",
            )
            for i, r in enumerate(rules)
        )
    storage = None
    if (rules := allow("storage", ("uri", "access"))) is not None:
        out: list[StorageRule] = []
        for i, r in enumerate(rules):
            rpath = f"{ppath}.storage.allow[{i}]"
            suri = w.string(w.required(r, "uri", rpath), f"{rpath}.uri")
            access: list[str] = []
            for j, a in enumerate(w.items(w.required(r, "access", rpath), f"{rpath}.access")):
                text = w.string(a, f"{rpath}.access[{j}]")
                if text not in ACCESS:
                    raise w._fail(
                        f"{rpath}.access[{j}]",
                        f"unknown variant `{text[:40]}`, expected `read` or `write`",
                    )
                access.append(text)
            out.append(StorageRule(suri, tuple(access)))
        storage = tuple(out)
    environment = None
    if (rules := allow("environment", ("key", "value_from"))) is not None:
        environment = tuple(
            EnvRule(
                w.string(
                    w.required(r, "key", f"{ppath}.environment.allow[{i}]"),
                    f"{ppath}.environment.allow[{i}].key",
                ),
                w.opt_string(r.get("value_from"), f"{ppath}.environment.allow[{i}].value_from"),
            )
            for i, r in enumerate(rules)
        )
    resources = None
    if (res := section("resources")) is not None:
        rpath = f"{ppath}.resources"
        rf = w.fields(res, rpath, "a mapping", ("memory_bytes", "cpu_time_ms"), note_as=path)
        resources = {
            k: w.integer(v, f"{rpath}.{k}", _U64, "an unsigned integer (u64)")
            for k, v in rf.items()
            if not _is_null(v)
        }
    return ManifestComponent(
        index=index,
        uri=uri,
        name=name,
        digest=digest,
        network=network,
        storage=storage,
        environment=environment,
        resources=resources,
        retry_policy=retry is not None and not _is_null(retry),
    )


def _walk_retry(w: _Walk, node: Node, path: str) -> None:
    f = w.fields(node, path, "a mapping", ("attempts", "backoff"), note_as=path.rsplit(".", 1)[0])
    w.integer(w.required(f, "attempts", path), f"{path}.attempts", _U32, "a u32")
    bpath = f"{path}.backoff"
    backoff = w.required(f, "backoff", path)
    bf = w.fields(backoff, bpath, "a mapping", ("type", "base_ms", "increment_ms"))
    kind = w.string(w.required(bf, "type", bpath), f"{bpath}.type")
    needs = {"exponential": "base_ms", "linear": "increment_ms"}.get(kind)
    if needs is None:
        raise w._fail(
            f"{bpath}.type", f"unknown variant `{kind[:40]}`, expected `exponential` or `linear`"
        )
    w.integer(w.required(bf, needs, bpath), f"{bpath}.{needs}", _U64, "a u64")


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


def _stem(path: str) -> str:
    """Rust's `Path::file_stem` of the last component (`a.b.wasm` → `a.b`)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        return name
    head, dot, _ = name.rpartition(".")
    return head if dot and head else name


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
    from wassette_state.store.domain.policy import validate_policy

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


# ------------------------------------------------------------------ permissions, compared


def permissions_of(policy: str | Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """The permissions a manifest can carry, in a canonical form (sets, sorted), to compare a
    policy with what Wassette provisions from a manifest: network hosts, storage `(uri,
    access)` and environment keys."""
    from wassette_state.store.domain.policy import parse_policy

    if policy is None:
        return {"network": [], "storage": [], "environment": []}
    doc = parse_policy(policy) if isinstance(policy, str) else policy
    perms = doc.get("permissions") or {}

    def allow(kind: str) -> list[Any]:
        section = perms.get(kind) or {}
        return list(section.get("allow") or []) if isinstance(section, dict) else []

    return {
        "network": sorted({e["host"] for e in allow("network") if "host" in e}),
        "storage": sorted(
            {(e["uri"], tuple(sorted(set(e.get("access") or ())))) for e in allow("storage")}
        ),
        "environment": sorted({e["key"] for e in allow("environment")}),
    }


# ------------------------------------------------------------------ writing


@dataclass
class _Split:
    """A policy cut into what the manifest carries and what it does not."""

    network: list[str] = field(default_factory=list)
    storage: list[dict[str, Any]] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (what, detail)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _split_policy(doc: Mapping[str, Any]) -> _Split:
    out = _Split()
    perms = doc.get("permissions") or {}
    net = perms.get("network") or {}
    for entry in net.get("allow") or ():
        if "host" in entry:
            out.network.append(entry["host"])
        else:
            out.lost.append(("network.cidr", f"allow {_show(entry)}: a manifest allows hosts only"))
    if net.get("deny"):
        out.lost.append(("network.deny", f"{_show(net['deny'])}: a manifest has no deny lists"))
    storage = perms.get("storage") or {}
    for entry in storage.get("allow") or ():
        uri = entry.get("uri")
        if isinstance(uri, str) and uri.startswith("fs://"):
            out.storage.append({"uri": uri, "access": list(entry.get("access") or ())})
        else:
            out.lost.append(
                ("storage.uri", f"allow {_show(entry)}: a manifest takes fs:// uris only")
            )
    if storage.get("deny"):
        out.lost.append(("storage.deny", f"{_show(storage['deny'])}: a manifest has no deny lists"))
    env = perms.get("environment") or {}
    for entry in env.get("allow") or ():
        if entry["key"] not in out.environment:  # Wassette refuses a key twice; same permission
            out.environment.append(entry["key"])
    for kind in ("runtime", "resources", "ipc"):
        if perms.get(kind):
            hint = (
                " (its memory_bytes/cpu_time_ms set no limit in Wassette 0.8.0)"
                if kind == "resources"
                else ""
            )
            out.lost.append((kind, f"{_show(perms[kind])}: not in a manifest{hint}"))
    return out


def _name_and_notes(cid: str, doc: Mapping[str, Any], split: _Split) -> tuple[str, list[Note]]:
    """The `name` to write and what of the policy's head the manifest loses. Wassette writes
    the description `Auto-generated policy for <name>`, so a description of that form is
    carried by its name; any other is lost (the name is then the id, a readable label)."""
    notes: list[Note] = []
    description = doc.get("description")
    name = cid
    if isinstance(description, str) and description.startswith(POLICY_DESCRIPTION):
        rest = description[len(POLICY_DESCRIPTION) :]
        if rest:
            name = rest
    elif description is not None:
        notes.append(
            Note(
                cid,
                "policy.description",
                f"{_show(description)[:120]}: Wassette writes '{POLICY_DESCRIPTION}{cid}'",
            )
        )
    elif split.network or split.storage or split.environment:
        notes.append(
            Note(cid, "policy.description", f"none: Wassette writes '{POLICY_DESCRIPTION}{cid}'")
        )
    if str(doc.get("version")) != "1.0":
        notes.append(
            Note(cid, "policy.version", f"{_show(doc.get('version'))}: Wassette writes '1.0'")
        )
    if "$schema" in doc:
        notes.append(Note(cid, "policy.$schema", f"{_show(doc['$schema'])[:120]}: not kept"))
    return name, notes


def component_entry(
    cid: str, uri: str, sha256: str, policy: str | None, secret_keys: tuple[str, ...]
) -> tuple[dict[str, Any], list[Note]]:
    """One `components[]` entry and the notes of what it cannot carry."""
    from wassette_state.store.domain.policy import parse_policy

    notes: list[Note] = []
    perms: dict[str, Any] = {}
    name = cid
    if policy is None:
        notes.append(
            Note(
                cid,
                "policy",
                "none: written as 'permissions: {}', which provisions no policy into a component "
                "dir without one, but leaves a policy already there in place (a manifest cannot "
                "remove one)",
            )
        )
    else:
        doc = parse_policy(policy)
        split = _split_policy(doc)
        name, head = _name_and_notes(cid, doc, split)
        notes.extend(head)
        notes.extend(Note(cid, what, detail) for what, detail in split.lost)
        if split.network:
            perms["network"] = {"allow": [{"host": h} for h in split.network]}
        if split.storage:
            perms["storage"] = {"allow": split.storage}
        if split.environment:
            perms["environment"] = {"allow": [{"key": k} for k in split.environment]}
        if not perms:
            notes.append(
                Note(
                    cid,
                    "policy",
                    "grants nothing a manifest carries: written as 'permissions: {}', so "
                    "Wassette writes no policy file for it (and keeps one already there)",
                )
            )
    if secret_keys:
        keys = ", ".join(secret_keys)
        notes.append(
            Note(
                cid,
                "secret_keys",
                f"{keys}: a manifest carries no secrets; Wassette reads their values from its "
                f"secrets dir: copy the secrets file, or give them as KEY=VALUE lines on the "
                f"stdin of '{_stdin_command(cid)}'",
            )
        )
    entry: dict[str, Any] = {"uri": uri, "name": name, "digest": f"sha256:{sha256}"}
    entry["permissions"] = perms
    return entry, notes


def manifest_doc(
    components: Mapping[str, tuple[str | None, str, str | None, tuple[str, ...]]],
    environment: Mapping[str, str],
) -> tuple[dict[str, Any], list[Note]]:
    """A manifest for `components` (id → (uri or None, wasm sha256, policy text or None,
    secret keys)) and everything it cannot carry. A component without a uri (no file named
    `<id>.wasm` holds its bytes) is left out and reported. Sorted by id: deterministic."""
    entries: list[dict[str, Any]] = []
    notes: list[Note] = []
    for cid in sorted(components):
        uri, sha, policy, keys = components[cid]
        if uri is None:
            notes.append(
                Note(
                    cid,
                    "component",
                    f"left out: no file named {cid}.wasm holds its bytes (sha256 {sha[:12]}…) "
                    "where it was attached from or in the component dir, and Wassette names a "
                    "component after its file; export with --wasm-dir DIR to write one",
                )
            )
            continue
        entry, more = component_entry(cid, uri, sha, policy, keys)
        entries.append(entry)
        notes.extend(more)
    if environment:
        notes.append(
            Note(
                None,
                "environment",
                f"{', '.join(sorted(environment))}: a manifest has no environment variables; "
                "give them to 'wassette serve' with --env KEY=VALUE or --env-file FILE",
            )
        )
    return {"version": MANIFEST_VERSION, "components": entries}, notes


def file_uri(path: str) -> str:
    """The uri Wassette reads as `path`: the path as is, never percent-encoded."""
    return "file://" + path


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_manifest(doc: dict[str, Any], fmt: Format) -> bytes:
    """Deterministic YAML (block style, pure-Python emitter) or pretty JSON."""
    if fmt == "json":
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    text: str = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,
    )
    return text.encode()


def _stdin_command(component_id: str) -> str:
    """The hint's command: values on stdin, never on a command line others read in /proc."""
    from wassette_state.store.domain.secret_hints import secret_set_command

    return secret_set_command(component_id, [], "wassette-state")
