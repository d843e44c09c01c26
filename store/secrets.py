"""Secret values on disk in Wassette's layout. Values never go anywhere else."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from wassette_state.store import fsutil
from wassette_state.store.errors import ValidationError

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
# The loader secrets files are read with (drift's fast key reader follows its resolver rules).
LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Loader = LOADER
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def sanitize(component_id: str) -> str:
    """Wassette's file name for a component's secrets."""
    name = _UNSAFE.sub("_", component_id).strip("_")
    name = name.encode()[:128].decode("utf-8", "ignore")
    return name or "unnamed"


def file_name(component_id: str) -> str:
    return f"{sanitize(component_id)}.yaml"


def secrets_file(secrets_dir: Path, component_id: str) -> Path:
    return secrets_dir / file_name(component_id)


def read_values(secrets_dir: Path, component_id: str) -> dict[str, str]:
    path = secrets_file(secrets_dir, component_id)
    raw = fsutil.read_if_file(path)
    if raw is None:
        return {}
    try:
        doc = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        # Never echo the file: it holds secret values.
        raise ValidationError(f"secrets file {path} is not valid YAML") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValidationError(f"secrets file {path} is not a KEY: value map")
    return {str(k): "" if v is None else str(v) for k, v in doc.items()}


def write_values(secrets_dir: Path, component_id: str, values: dict[str, str]) -> None:
    """Replace the component's secrets file atomically (0600 in a 0700 dir); empty → removed."""
    fsutil.ensure_dir(secrets_dir, 0o700)
    path = secrets_file(secrets_dir, component_id)
    if not values:
        fsutil.remove(path)
        return
    body = yaml.dump(
        dict(sorted(values.items())), Dumper=_Dumper, allow_unicode=True, default_flow_style=False
    )
    fsutil.atomic_write(path, body.encode(), mode=0o600)


def snapshot_file(secrets_dir: Path, component_id: str) -> bytes | None:
    """The raw file, to put back byte-identical if the command fails after writing."""
    return fsutil.read_if_file(secrets_file(secrets_dir, component_id))


def restore_file(secrets_dir: Path, component_id: str, raw: bytes | None) -> None:
    path = secrets_file(secrets_dir, component_id)
    if raw is None:
        fsutil.remove(path)
    else:
        fsutil.atomic_write(path, raw, mode=0o600)
