"""A JSON state file's text -> plain values, refusing what JSON allows but a state file must not.

Nesting is bounded before the (recursive) json module sees the text; non-finite numbers are
refused; a repeated key is marked on its object and reported with its path after parsing.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.snapshot_messages import _show
from wassette_state.store.domain.snapshot_model import MAX_NESTING_DEPTH

# A JSON string (or an unterminated one, up to the end: never fails, so scanning is linear).
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_BRACKETS = str.maketrans("{}", "[]")


def _check_json_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_NESTING_DEPTH before json (recursive) sees the text."""
    if not _json_nests_within(text, MAX_NESTING_DEPTH):
        raise ValidationError(f"state file nests deeper than {MAX_NESTING_DEPTH} levels")


def _json_nests_within(text: str, levels: int) -> bool:
    """Strings and everything but brackets dropped, innermost `[]` pairs removed once per
    level: after `levels` passes a balanced text nested no deeper is empty."""
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text)).translate(_BRACKETS)
    for _ in range(levels):
        if "[]" not in brackets:
            return True
        brackets = brackets.replace("[]", "")
    return "[]" not in brackets


class _DuplicateKeys(dict[str, Any]):
    """Marks a JSON object that had a repeated key; reported with its path after parsing."""

    duplicate: str = ""


class _NonFinite(ValueError):
    pass


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            marked = _DuplicateKeys(pairs)
            marked.duplicate = key
            return marked
        result[key] = value
    return result


def _json_constant(name: str) -> Any:
    raise _NonFinite(name)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _load_json(text: str) -> Any:
    _check_json_depth(text)
    try:
        return json.loads(
            text,
            object_pairs_hook=_json_pairs,
            parse_constant=_json_constant,
            parse_float=_json_float,
        )
    except _NonFinite as exc:
        raise ValidationError(
            f"invalid JSON: {_show(str(exc))} is not allowed (numbers must be finite)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ValidationError(f"state file nests deeper than {MAX_NESTING_DEPTH} levels") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        detail = "an integer has too many digits" if "digits" in str(exc) else "invalid value"
        raise ValidationError(f"invalid JSON: {detail}") from None
