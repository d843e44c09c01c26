"""Where things live: database URL, data dir (blobs), component dir, secrets dir, actor."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from wassette_state.store import db


@dataclass(frozen=True)
class Settings:
    db_url: str
    data_dir: Path  # blobs and the materialization marker live here
    component_dir: Path
    secrets_dir: Path
    actor: str

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs" / "sha256"


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _absolute(path: str) -> Path:
    """Absolute but not resolved: a symlinked directory must stay visible as one, so the
    tool can refuse to write through it."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def to_url(db_arg: str) -> str:
    """Accept a URL or a plain file path (which means SQLite)."""
    if "://" in db_arg:
        return db_arg
    return f"sqlite:///{Path(db_arg).expanduser().resolve()}"


def resolve(
    db_arg: str | None = None,
    component_dir: str | None = None,
    secrets_dir: str | None = None,
    actor: str | None = None,
) -> Settings:
    import platformdirs

    data_home = Path(platformdirs.user_data_dir("wassette", appauthor=False))
    config_home = Path(platformdirs.user_config_dir("wassette", appauthor=False))
    url = to_url(db_arg) if db_arg else f"sqlite:///{data_home / 'state.db'}"
    path = db.sqlite_path(url)
    data_dir = path.parent if path is not None else data_home
    return Settings(
        db_url=url,
        data_dir=data_dir,
        component_dir=_absolute(component_dir) if component_dir else data_dir / "components",
        secrets_dir=_absolute(secrets_dir)
        if secrets_dir
        else (config_home / "secrets" if db_arg is None else data_dir / "secrets"),
        actor=actor or default_actor(),
    )
