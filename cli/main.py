"""The `wassette-state` command: global options, lazy store opening, errors → exit codes."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from wassette_state.store.config import Settings
    from wassette_state.store.service import Store

VERSION = "0.1.0"
# `table` is Wassette's name for the text table (`wassette component list -o table`).
OUTPUT_FORMATS = ("text", "json", "yaml", "table")
OUTPUT_NAMES = ("-o", "--output", "--output-format")  # the last is Wassette's spelling

# The `state` commands that are also top-level (`wassette-state export FILE`), in help order.
STATE_SHORTCUTS = (
    "export",
    "import",
    "history",
    "show",
    "diff",
    "blame",
    "rollback",
    "undo",
    "tag",
    "tags",
    "verify",
    "rebuild",
    "sync",
)


def output_format(value: str | None) -> str | None:
    return "text" if value == "table" else value


class App:
    """Per-invocation context: settings are resolved and the store opened only when needed."""

    def __init__(self, **opts: Any) -> None:
        self.opts = opts
        self.output: str = output_format(opts.get("output")) or "text"
        self._settings: Settings | None = None
        self._store: Store | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from wassette_state.store.config import resolve

            self._settings = resolve(
                self.opts.get("db"),
                self.opts.get("component_dir"),
                self.opts.get("secrets_dir"),
                self.opts.get("actor"),
            )
        return self._settings

    @property
    def command_prefix(self) -> str:
        """`wassette-state` plus the location options in use, so printed commands hit this store."""
        import shlex

        parts = ["wassette-state"]
        for opt in ("db", "component_dir", "secrets_dir"):
            value = self.opts.get(opt)
            if value:
                parts += [f"--{opt.replace('_', '-')}", shlex.quote(str(value))]
        return " ".join(parts)

    @property
    def store(self) -> Store:
        if self._store is None:
            from wassette_state.store.service import Store

            ctx = click.get_current_context(silent=True)
            self._store = Store(self.settings, writing=ctx is None or writes(ctx))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_app = click.make_pass_decorator(App)

# Commands that only read the store (also `--dry-run`s): they never create a store, and they
# work on a read-only copy of one.
READ_ONLY_COMMANDS = frozenset(
    ("history", "show", "diff", "blame", "tags", "verify", "export", "list", "inspect", "get")
)


def writes(ctx: click.Context) -> bool:
    """Whether the running command may change the store."""
    name = ctx.command.name
    return name not in READ_ONLY_COMMANDS and not ctx.params.get("dry_run")


def output_option(f: Any) -> Any:
    """`-o` accepted after the subcommand too (`wassette-state state history -o json`), also
    spelled as Wassette does (`--output-format table`)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        app = ctx.find_object(App)
        if value is not None and app is not None:
            app.output = output_format(value) or app.output

    return click.option(
        *OUTPUT_NAMES,
        "output",
        type=click.Choice(OUTPUT_FORMATS),
        default=None,
        expose_value=False,
        callback=callback,
        help="Output format (table = text).",
    )(f)


def component_dir_option(f: Any) -> Any:
    """`--component-dir DIR` after the subcommand, where Wassette takes it
    (`wassette-state component list --component-dir DIR`); it wins over the global one."""

    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        app = ctx.find_object(App)
        if value is not None and app is not None:
            app.opts["component_dir"] = value

    return click.option(
        "--component-dir",
        "component_dir",
        metavar="DIR",
        default=None,
        expose_value=False,
        callback=callback,
        help="Component directory (as the global --component-dir).",
    )(f)


class TopGroup(click.Group):
    """The top level: the command groups, then the `state` commands it also takes directly."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        found = {n: self.get_command(ctx, n) for n in self.list_commands(ctx)}
        listed = {n: c for n, c in found.items() if c is not None and not c.hidden}
        groups = [n for n in listed if n not in STATE_SHORTCUTS]
        shortcuts = [n for n in STATE_SHORTCUTS if n in listed]
        for title, names in (
            ("Commands", groups),
            ("State commands (also spelled 'state NAME')", shortcuts),
        ):
            if names:
                limit = formatter.width - 6 - max(len(n) for n in names)
                with formatter.section(title):
                    formatter.write_dl([(n, listed[n].get_short_help_str(limit)) for n in names])


@click.group(
    cls=TopGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--db", envvar="WASSETTE_STATE_DB", help="Database URL or SQLite file path.")
@click.option("--component-dir", envvar="WASSETTE_COMPONENT_DIR", help="Component directory.")
@click.option("--secrets-dir", envvar="WASSETTE_SECRETS_DIR", help="Secrets directory.")
@click.option("--actor", envvar="WASSETTE_ACTOR", help="Who is making changes (default user@host).")
@click.option(
    *OUTPUT_NAMES, "output", type=click.Choice(OUTPUT_FORMATS), default=None, help="Output format."
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
@click.version_option(VERSION, prog_name="wassette-state")
@click.pass_context
def cli(ctx: click.Context, /, **opts: Any) -> None:
    """Event-sourced state store for Wassette: every change recorded, any moment restorable.

    \b
    Examples:
      wassette-state component attach ./weather.wasm --policy policy.yaml
      wassette-state history --component weather
      wassette-state export state.yaml --at 2h
    """
    if opts["verbose"]:
        import logging

        logging.basicConfig(
            level=logging.INFO, format="wassette-state: %(message)s", stream=sys.stderr
        )
    app = App(**opts)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from wassette_state.cli import component, policy, runtime, secret, state

    for group in (
        component.component,
        policy.policy,
        policy.permission,
        secret.secret,
        secret.env,
        state.state,
        runtime.start_command,
    ):
        cli.add_command(group)
    # The same command objects once more at the top level: `export FILE` is `state export FILE`.
    for name in STATE_SHORTCUTS:
        cli.add_command(state.state.commands[name], name)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every refusal is one `Error:` line and an exit code from the design."""
    from wassette_state.store.errors import StoreError

    try:
        cli.main(args=argv, prog_name="wassette-state", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        msg = e.format_message().replace("\n", " ")
        click.echo(f"Error: {msg}", err=True)
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except StoreError as e:
        click.echo(f"Error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # never a traceback on the terminal: it could carry a secret value
        if os.environ.get("WASSETTE_DEBUG") == "1":
            raise
        click.echo(
            f"Error: unexpected failure ({type(e).__name__}); rerun with WASSETTE_DEBUG=1 "
            "for details",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
