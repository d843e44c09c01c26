"""A YAML state file's text -> plain values, through a strict composer (no I/O).

No anchors/aliases, an allow-list of tags, string keys only, no duplicate keys, bounded nesting;
events come from libyaml when available. The long one-line metadata that `state export` writes
are read with `json` where that provably gives what the YAML reader would (see below).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any, cast

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.snapshot_json import _json_nests_within
from wassette_state.store.domain.snapshot_messages import _one_line, _show, _spell
from wassette_state.store.domain.snapshot_model import MAX_NESTING_DEPTH
from wassette_state.store.domain.state import compact

_Y = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(f"{_Y}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp"))
_SEQ_TAG = f"{_Y}seq"
_MAP_TAG = f"{_Y}map"

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlRefused(Exception):
    def __init__(self, message: str, mark: Any, path: Any = "") -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark
        # A spelled path, or the composer's (parent, key) link chain.
        self.path = path if isinstance(path, str) else _spell(path)


def _mark(mark: Any) -> Any:
    """libyaml and pure-Python marks differ in type; nodes only need line/column."""
    return mark


def _at(mark: Any) -> str:
    if mark is None:
        return ""
    return f" (line {mark.line + 1}, column {mark.column + 1})"


class _StateLoader(_BaseLoader):  # type: ignore[misc]
    """Safe loader with our own composer: no aliases/anchors, an allow-list of tags, string
    keys only, no duplicate keys, bounded nesting. Events come from libyaml when available."""

    def get_single_node(self) -> Node | None:
        self.get_event()  # StreamStart
        node: Node | None = None
        if not self.check_event(StreamEndEvent):
            self.get_event()  # DocumentStart
            node = self._compose(0, None)
            self.get_event()  # DocumentEnd
        if not self.check_event(StreamEndEvent):
            event = self.get_event()
            raise _YamlRefused("expected a single YAML document", event.start_mark)
        self.get_event()
        return node

    def _compose(self, depth: int, path: Any) -> Node:
        # `path` is a (parent, key) link chain, spelled out only for an error (see _spell).
        event: Any = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _YamlRefused(
                "YAML anchors/aliases are not allowed in state files", event.start_mark, path
            )
        if isinstance(event, ScalarEvent):
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(ScalarNode, event.value, event.implicit)
            if tag not in _SCALAR_TAGS:
                raise self._bad_tag(tag, event, path)
            return ScalarNode(
                tag, event.value, _mark(event.start_mark), _mark(event.end_mark), style=event.style
            )
        if depth >= MAX_NESTING_DEPTH:
            raise _YamlRefused(
                f"state file nests deeper than {MAX_NESTING_DEPTH} levels", event.start_mark, path
            )
        if isinstance(event, SequenceStartEvent):
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(SequenceNode, None, event.implicit)
            if tag != _SEQ_TAG:
                raise self._bad_tag(tag, event, path)
            seq = SequenceNode(tag, [], _mark(event.start_mark), None, flow_style=event.flow_style)
            while not self.check_event(SequenceEndEvent):
                seq.value.append(self._compose(depth + 1, (path, len(seq.value))))
            seq.end_mark = self.get_event().end_mark
            return seq
        if isinstance(event, MappingStartEvent):
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(MappingNode, None, event.implicit)
            if tag != _MAP_TAG:
                raise self._bad_tag(tag, event, path)
            mapping = MappingNode(
                tag, [], _mark(event.start_mark), None, flow_style=event.flow_style
            )
            seen: set[str] = set()
            while not self.check_event(MappingEndEvent):
                key_event = self.peek_event()
                key = self._compose(depth + 1, path)
                if not isinstance(key, ScalarNode) or key.tag != f"{_Y}str":
                    raise _YamlRefused(
                        "mapping keys must be strings (quote the key)", key_event.start_mark, path
                    )
                if key.value in seen:
                    raise _YamlRefused(
                        f"duplicate key {_show(key.value)}", key_event.start_mark, path
                    )
                seen.add(key.value)
                value = self._compose(depth + 1, (path, key.value))
                mapping.value.append((key, value))
            mapping.end_mark = self.get_event().end_mark
            return mapping
        raise _YamlRefused("unexpected YAML event", event.start_mark, path)  # pragma: no cover

    @staticmethod
    def _bad_tag(tag: str, event: Any, path: Any) -> _YamlRefused:
        if tag == f"{_Y}merge":
            return _YamlRefused(
                "YAML merge keys ('<<') are not allowed in state files", event.start_mark, path
            )
        return _YamlRefused(
            f"YAML tag {_show(tag)} is not allowed in state files", event.start_mark, path
        )

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, OverflowError):
            # e.g. `!!bool maybe`, `!!int x`, an integer with too many digits. The value is
            # not shown: it could be anything.
            kind = node.tag.rsplit(":", 1)[-1]
            raise _YamlRefused(f"invalid {kind} value", node.start_mark) from None

    def construct_yaml_timestamp(self, node: ScalarNode) -> str:
        return cast(str, node.value)  # timestamps stay strings (e.g. as_of.recorded_at)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value = cast(float, super().construct_yaml_float(node))
        if not math.isfinite(value):
            raise _YamlRefused(
                f"{_show(node.value)} is not allowed (numbers must be finite)", node.start_mark
            )
        return value


_StateLoader.add_constructor(f"{_Y}timestamp", _StateLoader.construct_yaml_timestamp)
_StateLoader.add_constructor(f"{_Y}float", _StateLoader.construct_yaml_float)


def _run_yaml_loader(text: str) -> Any:
    loader = _StateLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ----- YAML with spliced metadata lines ------------------------------------------------------
#
# `state export` writes each component's metadata as one line of compact JSON (valid YAML flow
# style). Composing those tens of MB node by node in Python is nearly all of a large YAML
# import, so such lines are read with `json` instead, where that provably gives what the YAML
# reader would: the text must be exactly the compact JSON of what it parses to (the exporter's
# form, whose YAML reading a property test pins), hold no number with an exponent (YAML 1.1
# reads `1e+16` as a string), no character the YAML reader refuses or treats as a line break,
# no repeated key, and nest within the depth limit. Every other case, and any doubt afterwards,
# goes through the YAML reader unchanged, so results and error messages are the same.

_SPLICED_LINE = re.compile(r"^( *metadata: )(\{.*\})$", re.MULTILINE)
_SPLICE_UNSAFE = re.compile(
    "[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]"
)
_SPLICE_MIN = 256  # shorter lines are not worth it


class _NotSpliceable(Exception):
    pass


def _splice_float(text: str) -> float:
    if "e" in text or "E" in text:
        raise _NotSpliceable(text)
    return float(text)


def _splice_constant(name: str) -> Any:
    raise _NotSpliceable(name)


def _json_line_value(text: str) -> Any:
    """The value of one spliced line, or _NotSpliceable."""
    if (text.isascii() and "\x7f" in text) or (not text.isascii() and _SPLICE_UNSAFE.search(text)):
        raise _NotSpliceable("character")
    try:
        # No pairs hook: a repeated key keeps only its last value, so the text is then not
        # the compact form of the result and the line is refused below.
        value = json.loads(text, parse_float=_splice_float, parse_constant=_splice_constant)
    except (ValueError, RecursionError):
        raise _NotSpliceable("json") from None
    if compact(value) != text:
        raise _NotSpliceable("not the exporter's form")
    # Collections below the component's metadata (YAML depth 3) must stay under the limit.
    if not _json_nests_within(text, MAX_NESTING_DEPTH - 3):
        raise _NotSpliceable("depth")
    return value


def _load_yaml_spliced(text: str) -> Any | None:
    """The document with metadata lines read as JSON, or None to read it all as YAML."""
    values: list[Any] = []
    tag = f"__wassette_spliced_{uuid.uuid4().hex}_"

    def swap(m: re.Match[str]) -> str:
        if len(m.group(2)) < _SPLICE_MIN:
            return m.group(0)
        try:
            values.append(_json_line_value(m.group(2)))
        except _NotSpliceable:
            return m.group(0)
        return f"{m.group(1)}{tag}{len(values) - 1}"

    reduced = _SPLICED_LINE.sub(swap, text)
    if not values:
        return None
    try:
        doc = _run_yaml_loader(reduced)
    except Exception:  # the YAML reader, on the original text, says what is wrong
        return None
    comps = doc.get("components") if isinstance(doc, dict) else None
    placed = 0
    for comp in comps if isinstance(comps, list) else []:
        meta = comp.get("metadata") if isinstance(comp, dict) else None
        if isinstance(meta, str) and meta.startswith(tag):
            index = int(meta[len(tag) :])
            comp["metadata"] = values[index]
            placed += 1
    # Each placeholder must have landed where it was made, as a component's metadata (a line
    # that only looked like one, e.g. inside a block scalar, shows up as a miss here).
    return doc if placed == len(values) else None


def _load_yaml(text: str, splice: bool = True) -> Any:
    spliced = _load_yaml_spliced(text) if splice else None
    if spliced is not None:
        return spliced
    try:
        return _run_yaml_loader(text)
    except _YamlRefused as exc:
        where = f"{exc.path}: " if exc.path else ""
        raise ValidationError(f"invalid YAML: {where}{exc.message}{_at(exc.mark)}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = _one_line(exc.problem or exc.context or "syntax error")
        if "nesting depth" in problem:  # libyaml's own (higher) limit, hit while scanning ahead
            problem = f"state file nests deeper than {MAX_NESTING_DEPTH} levels"
        raise ValidationError(f"invalid YAML{_at(mark)}: {problem[:160]}") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {_one_line(str(exc))[:160]}") from None
    except RecursionError:
        raise ValidationError(f"state file nests deeper than {MAX_NESTING_DEPTH} levels") from None
    except (ValueError, TypeError, KeyError, OverflowError):  # backstop; never echo the value
        raise ValidationError("invalid YAML: a value does not match its type") from None
