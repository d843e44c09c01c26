"""Secret values on disk in Wassette's layout. Values never go anywhere else."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.files import fsutil

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


def read_raw(path: Path) -> bytes | None:
    """A secrets file's bytes, None when absent. A symbolic link is read through (Kubernetes
    mounts a Secret's files as links): Wassette reads what it points to, and so do we."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return fsutil.read_fd(fd)


def read_values(secrets_dir: Path, component_id: str) -> dict[str, str]:
    path = secrets_file(secrets_dir, component_id)
    raw = read_raw(path)
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
    """Replace the component's secrets file atomically (0600 in a 0700 dir); empty → removed.
    Written inside the dir opened once; a link there (a mounted Secret) is never replaced."""
    name = file_name(component_id)
    with fsutil.Dir(secrets_dir, 0o700) as d:
        if d.is_link(name):
            raise ValidationError(
                f"the secrets file {secrets_dir / name} is a symbolic link (a mounted Secret?); "
                "refusing to replace it"
            )
        if values:
            d.write(name, render(values), mode=0o600)
        else:
            d.remove(name)
        d.check()


def render(values: dict[str, str]) -> bytes:
    """The file's bytes: a flat `KEY: value` map, keys sorted."""
    body = yaml.dump(
        dict(sorted(values.items())), Dumper=_Dumper, allow_unicode=True, default_flow_style=False
    )
    return body.encode()


def snapshot_file(secrets_dir: Path, component_id: str) -> bytes | None:
    """The raw file (through a link), None when absent."""
    return read_raw(secrets_file(secrets_dir, component_id))
