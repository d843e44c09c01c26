"""Policy text: parse (and validate) YAML, dump it deterministically, Wassette's layout.

A policy read from anywhere goes through `parse_policy`; a policy this store writes is
`dump_policy` of a document, laid out by `wassette_form` as Wassette itself writes one, so the
same document is the same bytes on every machine (with or without libyaml).
"""

from __future__ import annotations

from typing import Any

import yaml

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.policy_validate import _clip, _is_number, validate_policy

__all__ = ["dump_policy", "parse_policy", "wassette_form"]

# Loading: libyaml when present, else pure Python (same documents either way).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Dumping: always the pure-Python emitter. libyaml's emitter is not byte-identical to it (it
# escapes characters beyond U+FFFF, writes `'': x` where the pure one writes `? ''`), and policy
# text must be the same bytes on every machine, with or without libyaml. Policies are tiny.


class _Dumper(yaml.SafeDumper):
    """The safe dumper, with strings that hold a Unicode line break double-quoted."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # The emitter may pick single quotes or a plain scalar for a string holding NEL, LS or PS
    # and write them raw; a reader then folds them into spaces. Double quotes escape them.
    style = '"' if any(c in data for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def _yaml_error(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "invalid YAML"
        where = ""
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        return f"{_clip(' '.join(problem.split()), 120)}{where}"
    return _clip(" ".join(str(error).split()), 160)


def parse_policy(text: str | bytes) -> dict[str, Any]:
    """Parse and validate a policy document; return it as plain dicts/lists/scalars."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            byte = e.object[e.start]
            raise ValidationError(
                f"policy: not valid UTF-8: {e.reason} (byte 0x{byte:02x} at offset {e.start})"
            ) from e
    if not isinstance(text, str):
        raise ValidationError(f"policy: expected text, got {type(text).__name__}")
    try:
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise ValidationError(f"policy: YAML syntax error: {_yaml_error(e)}") from e
    except RecursionError as e:
        raise ValidationError("policy: YAML syntax error: nesting too deep") from e
    except (ValueError, OverflowError) as e:
        # e.g. a timestamp-looking scalar with an impossible date (`2001-13-45`).
        message = _clip(" ".join(str(e).split()), 120)
        raise ValidationError(f"policy: YAML value error: {message}") from e
    except Exception as e:
        # PyYAML's constructors fail in ad-hoc ways on explicitly tagged scalars that do not fit
        # their tag (`!!timestamp x` → AttributeError, `!!bool x` → KeyError, `!!int ''` →
        # IndexError). This is the translation boundary: every such failure is bad input.
        raise ValidationError(
            f"policy: YAML value error: a scalar does not fit its tag ({type(e).__name__})"
        ) from e
    validate_policy(doc)
    result: dict[str, Any] = doc
    return result


def dump_policy(doc: dict[str, Any]) -> str:
    """Deterministic block-style YAML of `doc`, keys in their current order."""
    text: str = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,  # never fold long scalars: output must not depend on the emitter's wrap
    )
    return text


# Wassette (its policy crate, through serde) writes every section, in this order, absent ones
# as explicit nulls; `$schema` and comments do not survive. An edit is written that way so a
# later grant made by Wassette itself changes only the grant (DESIGN §7).
_SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "storage": ("allow", "deny"),
    "network": ("allow", "deny"),
    "environment": ("allow",),
    "runtime": ("docker", "hyperlight"),
    "ipc": ("allow", "deny"),
}


def wassette_form(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` laid out as Wassette 0.8.0 writes a policy it has edited."""
    perms = doc.get("permissions") or {}
    out: dict[str, Any] = {}
    for name in ("storage", "network", "environment", "runtime", "resources", "ipc"):
        section = perms.get(name)
        if not isinstance(section, dict):
            out[name] = None
        elif name == "resources":
            out[name] = _resources_form(section)
        else:
            out[name] = {f: section.get(f) for f in _SECTION_FIELDS[name]}
    return {"version": doc["version"], "description": doc.get("description"), "permissions": out}


def _resources_form(section: dict[str, Any]) -> dict[str, Any]:
    limits = section.get("limits")
    out: dict[str, Any] = {
        "limits": {"cpu": limits.get("cpu"), "memory": limits.get("memory")}
        if isinstance(limits, dict)
        else None
    }
    for legacy in ("cpu", "memory", "io"):
        value = section.get(legacy)
        if value is not None:
            # the legacy cpu field is a float to Wassette (`cpu: 2` comes back as `2.0`)
            out[legacy] = float(value) if legacy == "cpu" and _is_number(value) else value
    return out
