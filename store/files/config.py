"""Where things live: database URL, data dir (blobs), component dir, secrets dir, actor.

The component and secrets dirs are resolved as Wassette 0.8.0 resolves them, so both tools
manage the same dirs without flags (measured against the real binary):

1. the flag (`--component-dir`; `--secrets-dir` is ours, Wassette has none);
2. `WASSETTE_COMPONENT_DIR` / `WASSETTE_SECRETS_DIR` (Wassette reads them through figment:
   the name's case does not matter, the value is trimmed, a double-quoted value is unquoted,
   and a value that reads as a number, a boolean, a list or a table is not a path);
3. `component_dir` / `secrets_dir` in Wassette's `config.toml`: the file named by
   `WASSETTE_CONFIG_FILE` (empty: none; relative: searched in the current directory and its
   parents), else `$XDG_CONFIG_HOME/wassette/config.toml`; a missing file is no file;
4. `$XDG_DATA_HOME/wassette/components` and `$XDG_CONFIG_HOME/wassette/secrets` (an unset,
   empty or relative XDG variable means `~/.local/share` / `~/.config`).

Relative paths are taken from the current directory, as Wassette does. Wassette never expands
`~` (it would create a directory named `~`), so a dir that starts with `~` is refused. The
database (`--db`, default `$XDG_DATA_HOME/wassette/state.db`) does not move the dirs: the data
dir beside it only holds the blobs, the materialization marker and the env file.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.persistence import db

COMPONENT_ENV = "WASSETTE_COMPONENT_DIR"
SECRETS_ENV = "WASSETTE_SECRETS_DIR"
CONFIG_ENV = "WASSETTE_CONFIG_FILE"
ENV_FILE_NAME = "wassette.env"


@dataclass(frozen=True)
class Settings:
    db_url: str
    data_dir: Path  # blobs, the materialization marker and the env file live here
    component_dir: Path
    secrets_dir: Path
    actor: str
    # Where each dir came from: "--component-dir", "WASSETTE_COMPONENT_DIR", "config.toml",
    # "default" (for messages and `start-command -o json`).
    component_dir_from: str = "default"
    secrets_dir_from: str = "default"
    config_file: Path | None = None  # the Wassette config.toml that was read, if any

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs" / "sha256"

    @property
    def env_file(self) -> Path:
        """The instance env, materialized for `wassette serve|run --env-file`."""
        return self.data_dir / ENV_FILE_NAME


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def data_dir_of(url: str) -> Path:
    """The data dir of the store at `url`: beside a SQLite file, else the data home."""
    path = db.sqlite_path(url)
    return path.parent if path is not None else data_home()


def to_url(db_arg: str) -> str:
    """Accept a URL or a plain file path (which means SQLite)."""
    if "://" in db_arg:
        return db_arg
    return f"sqlite:///{Path(db_arg).expanduser().resolve()}"


# ------------------------------------------------------------------ base directories


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _base_dir(var: str, fallback: str) -> Path:
    """An XDG base dir as Wassette's `etcetera` picks it: the variable only when absolute."""
    if os.name == "nt":  # pragma: no cover - etcetera's Windows strategy
        appdata = os.environ.get("APPDATA", "")
        return Path(appdata) if os.path.isabs(appdata) else _home() / "AppData" / "Roaming"
    value = os.environ.get(var, "")
    return Path(value) if os.path.isabs(value) else _home() / fallback


def data_home() -> Path:
    """`$XDG_DATA_HOME/wassette`: the default store, components and blobs."""
    return _base_dir("XDG_DATA_HOME", ".local/share") / "wassette"


def config_home() -> Path:
    """`$XDG_CONFIG_HOME/wassette`: Wassette's config.toml and secrets."""
    return _base_dir("XDG_CONFIG_HOME", ".config") / "wassette"


# ------------------------------------------------------------------ Wassette's config.toml


def config_path() -> Path | None:
    """The config.toml Wassette reads, or None when there is none."""
    raw = os.environ.get(CONFIG_ENV)
    if raw is None:
        path = config_home() / "config.toml"
        return path if path.is_file() else None
    if raw == "":
        return None
    given = Path(raw)
    if given.is_absolute():
        return given if given.is_file() else None
    # figment searches a relative file name in the current directory, then its parents
    here = Path(os.getcwd())
    for folder in (here, *here.parents):
        if (folder / given).is_file():
            return folder / given
    return None


@dataclass(frozen=True)
class WassetteConfig:
    path: Path | None
    values: dict[str, Any]

    @property
    def environment_vars(self) -> dict[str, str]:
        env = self.values.get("environment_vars")
        return dict(env) if isinstance(env, dict) else {}


def _kind(value: object) -> str:
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number")):
        if isinstance(value, t):
            return name
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def load_config(path: Path | None = None, *, dirs: tuple[str, ...] = ()) -> WassetteConfig:
    """Read and check Wassette's config.toml the way Wassette refuses it: a parse error, or a
    known key of the wrong type. `dirs` are the dir keys that will be used (a key that a flag or
    an env var overrides is never read by Wassette, so its type does not matter)."""
    path = config_path() if path is None else path
    if path is None:
        return WassetteConfig(None, {})
    import tomllib

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ValidationError(f"cannot read Wassette's config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"Wassette's config file {path} is not valid UTF-8") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        reason = str(e).splitlines()[0] if str(e) else "invalid TOML"
        raise ValidationError(
            f"Wassette's config file {path} is not valid TOML: {reason}"
        ) from None
    for key in ("bind_address", *dirs):
        if key in values and not isinstance(values[key], str):
            raise ValidationError(
                f"Wassette's config file {path}: {key} must be a string, not {_kind(values[key])}"
            )
    env = values.get("environment_vars")
    if env is not None:
        if not isinstance(env, dict):
            raise ValidationError(
                f"Wassette's config file {path}: environment_vars must be a table, not {_kind(env)}"
            )
        for key, value in env.items():
            if not isinstance(value, str):
                raise ValidationError(
                    f"Wassette's config file {path}: environment_vars.{key} must be a string, "
                    f"not {_kind(value)}"
                )
    return WassetteConfig(path, values)


# ------------------------------------------------------------------ the dirs

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)")


def env_value(name: str) -> tuple[str, str] | None:
    """(the variable's spelling, its raw value) for a `WASSETTE_` name, matched without regard
    to case as figment does (the exact spelling first); None when unset or blank."""
    raw = os.environ.get(name)
    spelled = name
    if raw is None:
        for key, value in os.environ.items():
            if key.upper() == name:
                spelled, raw = key, value
                break
    if raw is None or not raw.strip():
        return None
    return spelled, raw


def figment_string(name: str, raw: str) -> str:
    """The path figment reads from an env var's value, or a refusal where Wassette refuses it."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        import json

        try:
            unquoted = json.loads(value)
        except ValueError:
            unquoted = None
        if isinstance(unquoted, str):
            return unquoted
    kind = None
    if value in ("true", "false"):
        kind = "a boolean"
    elif _INT.fullmatch(value) and -(2**63) <= int(value) < 2**64:
        kind = "an integer"
    elif _FLOAT.fullmatch(value):
        kind = "a number"
    elif value[:1] + value[-1:] in ("[]", "{}"):
        kind = "a list" if value[0] == "[" else "a table"
    if kind is not None:
        raise ValidationError(
            f"{name}={raw!r} is {kind} to Wassette, not a path (it refuses to start); "
            f'quote it ("{value}") or write it as ./{value}'
        )
    return value


def _dir(value: str, what: str, origin: str) -> Path:
    """Absolute but not resolved: a symlinked directory must stay visible as one, so the
    tool can refuse to write through it."""
    if value.startswith("~"):
        raise ValidationError(
            f"the {what} {value!r} (from {origin}) starts with '~', which Wassette does not "
            "expand (it would use a directory named '~' in the current one); give the full path"
        )
    if "\x00" in value:
        raise ValidationError(f"the {what} (from {origin}) contains a NUL byte")
    return Path(os.path.abspath(value))


@dataclass(frozen=True)
class _Dir:
    given: str | None  # the option's value (click also fills it from the exact env var)
    flag: str
    env_name: str
    key: str  # in config.toml
    default: Path
    what: str

    def before_config(self) -> tuple[Path, str] | None:
        """The flag, then the env var; None: ask config.toml, then the default."""
        from_env = os.environ.get(self.env_name)
        if self.given and self.given != from_env:
            return _dir(self.given, self.what, self.flag), self.flag
        found = (self.env_name, self.given) if self.given else env_value(self.env_name)
        if found is not None:
            value = figment_string(*found)
            if value:  # blank: as if unset
                return _dir(value, self.what, found[0]), self.env_name
        return None

    def from_config(self, config: WassetteConfig) -> tuple[Path, str]:
        value = config.values.get(self.key)
        if value is None:
            return self.default, "default"
        if not value:
            raise ValidationError(f"Wassette's config file {config.path}: {self.key} is empty")
        return _dir(value, self.what, f"{self.key} in {config.path}"), "config.toml"


def resolve(
    db_arg: str | None = None,
    component_dir: str | None = None,
    secrets_dir: str | None = None,
    actor: str | None = None,
) -> Settings:
    data = data_home()
    url = to_url(db_arg) if db_arg else f"sqlite:///{data / 'state.db'}"
    dirs = (
        _Dir(
            component_dir,
            "--component-dir",
            COMPONENT_ENV,
            "component_dir",
            data / "components",
            "component dir",
        ),
        _Dir(
            secrets_dir,
            "--secrets-dir",
            SECRETS_ENV,
            "secrets_dir",
            config_home() / "secrets",
            "secrets dir",
        ),
    )
    early = [d.before_config() for d in dirs]
    config: WassetteConfig | None = None
    if None in early:  # config.toml is read only when it can matter, and only once
        config = load_config(dirs=tuple(d.key for d, e in zip(dirs, early, strict=True) if not e))
    resolved = [
        e if e is not None else d.from_config(config or WassetteConfig(None, {}))
        for d, e in zip(dirs, early, strict=True)
    ]
    (comp, comp_from), (secrets, secrets_from) = resolved
    return Settings(
        db_url=url,
        data_dir=data_dir_of(url),
        component_dir=comp,
        secrets_dir=secrets,
        actor=actor or default_actor(),
        component_dir_from=comp_from,
        secrets_dir_from=secrets_from,
        config_file=config.path if config is not None else None,
    )


def origin_text(settings: Settings, key: str) -> str:
    """Where a dir came from, for messages: the flag, the env var, the config file, the default."""
    origin = settings.component_dir_from if key == "component_dir" else settings.secrets_dir_from
    if origin == "config.toml":
        return f"{key} in {settings.config_file}"
    return "the default" if origin == "default" else origin


def moved_dirs_warning(settings: Settings, recorded: dict[str, object]) -> str | None:
    """The one-line warning when the dirs a store last wrote differ from the resolved ones."""
    moved = []
    for key, what, now in (
        ("component_dir", "component dir", settings.component_dir),
        ("secrets_dir", "secrets dir", settings.secrets_dir),
    ):
        was = recorded.get(key)
        if isinstance(was, str) and was != str(now):
            moved.append(f"{what} {was}, now {now} (from {origin_text(settings, key)})")
    if not moved:
        return None
    return (
        "Warning: this store wrote its files elsewhere: "
        + "; ".join(moved)
        + "; pass --component-dir/--secrets-dir to keep using the recorded dirs"
    )


# ------------------------------------------------------------------ the running Wassette

WASSETTE_URL_ENV = "WASSETTE_STATE_WASSETTE_URL"
RESTART_ENV = "WASSETTE_STATE_RESTART_COMMAND"
OFF = ("off", "none")  # `--wassette-url off`: no Wassette to tell, and nothing said about it


@dataclass(frozen=True)
class LiveTarget:
    """How a running Wassette learns about a change: its MCP endpoint, a restart command, both
    or neither, each with where it came from (for messages)."""

    url: str | None = None
    url_from: str = ""
    restart_command: str | None = None
    restart_from: str = ""
    off: bool = False  # told explicitly that no Wassette runs on this store

    @property
    def configured(self) -> bool:
        return self.url is not None or self.restart_command is not None


def _given(value: str | None, flag: str, env_name: str) -> tuple[str, str] | None:
    """A flag's value and its origin (click fills the option from the env var too)."""
    if value is None or not value.strip():
        return None
    return value.strip(), (env_name if os.environ.get(env_name) == value else flag)


def bind_url(bind_address: str) -> str:
    """The MCP endpoint of a Wassette bound to `host:port` (an unspecified address is reached
    on the loopback one), or a refusal when the address is not `host:port`."""
    host, sep, port = bind_address.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValidationError(f"bind_address {bind_address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/mcp"


SERVE_FILE = "serve.json"  # in the data dir, while `wassette-state serve` runs


def serving(data_dir: Path) -> tuple[str, int] | None:
    """(URL, pid) of the `wassette-state serve` running on this store, if one is."""
    import json

    try:
        doc = json.loads((data_dir / SERVE_FILE).read_text())
        url, pid = str(doc["url"]), int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a serve that was killed
    except PermissionError:
        pass  # alive, another user's
    return url, pid


def _check_url(url: str, origin: str) -> None:
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValidationError(
            f"the Wassette URL {url!r} (from {origin}) is not valid: {e}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"the Wassette URL {url!r} (from {origin}) is not an http:// or https:// URL "
            "(Wassette's MCP endpoint, e.g. http://127.0.0.1:9001/mcp; 'off' for none)"
        )


def live_target(
    wassette_url: str | None = None,
    restart_command: str | None = None,
    data_dir: Path | None = None,
) -> LiveTarget:
    """Resolved like the dirs: the flag, then the env var; for the URL, then a `wassette-state
    serve` running on this store (`data_dir`), then the `bind_address` of Wassette's
    config.toml (where `wassette serve` listens when no flag says otherwise; its default
    127.0.0.1:9001 is never assumed). Reads config.toml only when it can matter."""
    url = _given(wassette_url, "--wassette-url", WASSETTE_URL_ENV)
    restart = _given(restart_command, "--restart-command", RESTART_ENV)
    if url is not None and url[0].lower() in OFF:
        return LiveTarget(off=True)
    if url is not None:
        _check_url(*url)
    if url is None and data_dir is not None:
        running = serving(data_dir)
        if running is not None:
            url = running[0], f"wassette-state serve (pid {running[1]})"
    if url is None:
        config = load_config()
        bind = config.values.get("bind_address")
        if isinstance(bind, str) and bind.strip():
            url = bind_url(bind), f"bind_address in {config.path}"
    return LiveTarget(
        url=url[0] if url else None,
        url_from=url[1] if url else "",
        restart_command=restart[0] if restart else None,
        restart_from=restart[1] if restart else "",
    )
