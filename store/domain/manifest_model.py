"""Wassette's provisioning manifest (`wassette serve --manifest FILE`): what one holds (no I/O).

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

`manifest_parse.parse_manifest` validates a manifest as Wassette does, and refuses what Wassette
would fail to provision from it (a policy its own validation refuses, a bad file uri).
`manifest_write.manifest_doc` turns a state into a manifest and lists everything the manifest
cannot carry (`Note`s): those are reported by the export, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

MANIFEST_VERSION = 1
URI_SCHEMES = ("file://", "oci://", "https://", "http://")
ACCESS = ("read", "write")
POLICY_DESCRIPTION = "Auto-generated policy for "
DEFAULT_LABEL = "component"  # what Wassette writes after POLICY_DESCRIPTION without a name
POLICY_KINDS = ("network", "storage", "environment")  # the kinds that become a policy
PERMISSION_KINDS = ("network", "storage", "environment", "resources")

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
        from wassette_state.store.domain.policy_text import dump_policy, wassette_form

        doc = self.policy_doc()
        return None if doc is None else dump_policy(wassette_form(doc))


@dataclass(frozen=True)
class Manifest:
    components: tuple[ManifestComponent, ...]
    # What the file says that neither Wassette nor this project keeps (unknown fields,
    # resources, value_from, retry_policy, a name that is not the id).
    notes: tuple[Note, ...] = ()


def _stem(path: str) -> str:
    """Rust's `Path::file_stem` of the last component (`a.b.wasm` → `a.b`)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        return name
    head, dot, _ = name.rpartition(".")
    return head if dot and head else name
