"""The key set of a secrets file, read without a YAML parser when it is in the shape
`secrets.write_values` writes: a drift scan of thousands of components reads them all."""

from __future__ import annotations

import functools
import re
from typing import Any

from wassette_state.store.files import secrets as secret_files

# A secrets file as PyYAML's block dumper writes a map of strings: lines `KEY: value`, each a
# plain key, ": ", and a one-line value, either single-quoted (printable ASCII, '' for a
# quote) or plain (printable ASCII; no indicator first; words split by single spaces, none
# starting with '#' or ':'; a ':' only before a non-space). Such a file is a block mapping of
# scalars and nothing else, so YAML reads it as a map with exactly these keys; each is a
# string unless the resolver types a plain scalar (`true`, `1.5`, `~`...): see KeyReader.
_WORD = rb"[!-9;-~]*+(?::++[!-9;-~]++)*+"  # printable, no space, no ':' at the end
_PLAIN = rb"-?[A-Za-z0-9_./+=]" + _WORD + rb"(?: [!\"$-9;-~]" + _WORD + rb")*+"
_QUOTED = rb"'[ -&(-~]*+(?:''[ -&(-~]*+)*+'"
_SECRETS_FILE = re.compile(  # possessive (no backtracking): it only ever matches less
    rb"(?:[A-Za-z_][A-Za-z0-9_.-]{0,255}+: (?:" + _QUOTED + rb"|" + _PLAIN + rb")\n)+"
)


class KeyReader:
    """Reads the key set of secrets files that `_SECRETS_FILE` matches whole, for one scan.

    For such a file yaml.load gives a map with exactly these keys, each a string unless the
    loader's resolver types a plain scalar (`true`, `1.5`, `~`...): then, or for any other
    file, `keys` says None and the file is left to `secrets.read_values`. The resolver's rules
    are read once per scan (nothing registers rules while a scan runs).
    """

    def __init__(self) -> None:
        loader: Any = secret_files.LOADER
        self.implicit: dict[Any, list[tuple[str, re.Pattern[str]]]] = loader.yaml_implicit_resolvers
        self.str_tag: str = loader.DEFAULT_SCALAR_TAG
        # yaml.resolver.BaseResolver.resolve, for plain scalars, is the rules of the first
        # character, first match wins, else the default (str); path or wildcard rules would
        # make it depend on more, so such a loader gets no fast path.
        self.usable = not loader.yaml_path_resolvers and None not in self.implicit
        self.typed_value = _typed_value_re(tuple(sorted(c for c in self.implicit if c)))
        self.is_str: dict[str, bool] = {}  # plain scalar -> read as a string (keys repeat)

    def keys(self, raw: bytes) -> set[str] | None:
        if not self.usable or not _SECRETS_FILE.fullmatch(raw):
            return None
        lines = raw.decode("ascii").split("\n")
        lines.pop()  # after the last "\n"
        implicit = self.implicit
        if self.typed_value.search(raw):  # a value may start with a character that has rules
            entries = [line.partition(": ") for line in lines]
            for _, _, value in entries:
                if value[0] != "'" and value[0] in implicit and not self.plain_is_str(value):
                    return None
            keys = {key for key, _, _ in entries}
        else:  # every value follows the line's first ": ", none starts with such a character
            keys = {line[: line.index(": ")] for line in lines}
        for key in keys:
            if key[0] in implicit and not self.plain_is_str(key):
                return None
        return keys

    def plain_is_str(self, scalar: str) -> bool:
        known = self.is_str.get(scalar)
        if known is None:
            known = True
            for tag, regexp in self.implicit.get(scalar[0], ()):
                if regexp.match(scalar):
                    known = tag == self.str_tag
                    break
            self.is_str[scalar] = known
        return known


@functools.lru_cache(maxsize=8)
def _typed_value_re(first_chars: tuple[str, ...]) -> re.Pattern[bytes]:
    """': ' then one of these characters (non-ASCII ones never pass _SECRETS_FILE)."""
    ascii_chars = [c for c in first_chars if c.isascii()]
    if not ascii_chars:
        return re.compile(rb"(?!)")
    return re.compile(b": [" + b"".join(re.escape(c).encode() for c in ascii_chars) + b"]")


def written_keys(raw: bytes) -> set[str] | None:
    """The keys of a secrets file read without a YAML parser; None: not a file it can read."""
    return KeyReader().keys(raw)
