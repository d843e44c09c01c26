"""A manifest's YAML read as serde reads Wassette's manifest structs (no I/O).

Nodes are composed, never constructed: the schema walk interprets each scalar as the field it is
in expects (`host: 42` is the host "42"), refuses what serde refuses with a path in the message,
and notes the unknown fields Wassette ignores. `looks_like_manifest` tells a manifest from a
state file handed to import.
"""

from __future__ import annotations

import json
import re

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.manifest_model import (
    ACCESS,
    PERMISSION_KINDS,
    EnvRule,
    ManifestComponent,
    StorageRule,
)

MAX_NODES = 1_000_000  # aliases can make a small file huge: bound the values walked
_U32 = 2**32 - 1
_U64 = 2**64 - 1
_NULLS = ("", "~", "null", "Null", "NULL")
_INT_RE = re.compile(r"[-+]?(?:[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)")


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
