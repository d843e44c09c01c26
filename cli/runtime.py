"""`wassette-state start-command`: the line that starts Wassette on this store."""

from __future__ import annotations

from typing import Any

import click

from wassette_state.cli.main import App, output_option, pass_app
from wassette_state.cli.output import emit, warn

TRANSPORTS = ("serve", "run")


def start_line(env: dict[str, str], argv: list[str]) -> str:
    """`VAR=value … program args…`, every word shell-quoted."""
    import shlex

    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


def plan(app: App, transport: str) -> dict[str, Any]:
    """Bring the store's files up to date, then describe the Wassette that runs on them."""
    from wassette_state.store.files import envfile
    from wassette_state.store.files.config import load_config

    config = load_config()  # `wassette serve|run` always reads it: a broken one stops it
    store = app.store
    settings = store.settings
    store.check_dirs()
    store.repair_files()
    store.materialize(set(), env=True)  # the env file exists and holds the current env
    environment = store.state(scope=set()).environment
    rendered = envfile.render(environment)
    argv = [
        "wassette",
        transport,
        "--component-dir",
        str(settings.component_dir),
        "--env-file",
        str(settings.env_file),
    ]
    for key in rendered.unwritable:  # a line break: only --env carries it
        argv += ["--env", f"{key}={environment[key]}"]
    env = {"WASSETTE_SECRETS_DIR": str(settings.secrets_dir)}
    extra = sorted(set(config.environment_vars) - set(environment))
    return {
        "transport": transport,
        "command": start_line(env, argv),
        "argv": argv,
        "env": env,
        "component_dir": str(settings.component_dir),
        "secrets_dir": str(settings.secrets_dir),
        "env_file": str(settings.env_file),
        "config_file": str(config.path) if config.path is not None else None,
        "config_environment_keys": extra,
    }


@click.command("start-command")
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default="serve",
    show_default=True,
    help="serve: Streamable HTTP; run: stdio, for an MCP client that starts Wassette itself.",
)
@output_option
@pass_app
def start_command(app: App, transport: str) -> None:
    """Print the shell line that starts Wassette on this store.

    The line names the store's component dir, its secrets dir and its env file (the store's
    `env set` variables, rewritten on every change), so the Wassette it starts serves these
    components with these secrets and this environment. `-o json` gives the same as data:
    `argv`, and `env` (variables to add to the environment).

    \b
    Examples:
      wassette-state start-command
      wassette-state start-command --transport run -o json
    """
    data = plan(app, transport)
    if data["config_environment_keys"]:
        warn(
            f"Wassette also gives components {', '.join(data['config_environment_keys'])} "
            f"from [environment_vars] in {data['config_file']}, which this store does not manage"
        )
    emit(data, app.output, data["command"])


@click.command(
    "serve",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--wassette-bin",
    envvar="WASSETTE_STATE_WASSETTE_BIN",
    default="wassette",
    show_default=True,
    metavar="PATH",
    help="The Wassette program to run.",
)
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="A component an agent unloads keeps its secret values (as `watch --keep-secret-values`).",
)
@click.argument("wassette_args", nargs=-1, type=click.UNPROCESSED)
@pass_app
def serve(
    app: App, wassette_bin: str, keep_secret_values: bool, wassette_args: tuple[str, ...]
) -> None:
    """Run Wassette (`wassette serve`) on this store, and record what its agents change.

    Wassette runs as a child on the store's component dir, secrets dir and env file (as
    `start-command` prints it), with the arguments after `--` added. While it runs, every
    change recorded by another wassette-state command is served at once, and every change an
    MCP client makes through Wassette's built-in tools (load-component, grants, …) is recorded
    as a `sync` transaction by `mcp:<client name>`, the tool call as its command. Signals are
    forwarded; the exit status is Wassette's.

    \b
    Examples:
      wassette-state serve
      wassette-state serve -- --bind-address 127.0.0.1:9002 --disable-builtin-tools
    """
    from wassette_state.cli.main import exit_with
    from wassette_state.store.files.config import bind_url, load_config
    from wassette_state.store.live import supervise

    args = list(wassette_args)
    data = plan(app, "serve")
    if data["config_environment_keys"]:
        warn(
            f"Wassette also gives components {', '.join(data['config_environment_keys'])} "
            f"from [environment_vars] in {data['config_file']}, which this store does not manage"
        )
    bind = load_config().values.get("bind_address")
    url = bind_url(supervise.bind_address(args, bind if isinstance(bind, str) else None))
    argv = [wassette_bin, *data["argv"][1:], *args]
    supervisor = supervise.Supervisor(app.store, argv, data["env"], url, keep_secret_values)
    exit_with(supervisor.run())
