"""The `wassette-state` command: global options, lazy store opening, errors → exit codes."""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from wassette_state.store.files.config import LiveTarget, Settings
    from wassette_state.store.usecases.service import Store

VERSION = "0.1.0"
# `table` is Wassette's name for the text table (`wassette component list -o table`).
OUTPUT_FORMATS = ("text", "json", "yaml", "table")
OUTPUT_NAMES = ("-o", "--output", "--output-format")  # the last is Wassette's spelling

TYPED = "wassette_state.typed"  # ctx.meta: the command line from the subcommand on

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
    "copy",
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
        self.live: LiveTarget | None = None  # resolved when a command opens the store to write

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from wassette_state.store.files.config import resolve

            self._settings = resolve(
                self.opts.get("db"),
                self.opts.get("component_dir"),
                self.opts.get("secrets_dir"),
                self.opts.get("actor"),
            )
        return self._settings

    def command_line(self, ctx: click.Context | None) -> str | None:
        """The command as typed, for the log: from the subcommand on, with what may be a
        secret left out (the values of `secret set`/`env set` KEY=VALUE arguments, which
        record the key names, and passwords in URLs)."""
        typed = ctx.meta.get(TYPED) if ctx is not None else None
        if typed is None or ctx is None:
            return None
        import re
        import shlex

        words = ctx.command_path.split()[1:]
        assigning = words[-2:] in (["secret", "set"], ["env", "set"])
        out = []
        for arg in typed:
            if assigning and "=" in arg and not arg.startswith("-"):
                arg = arg.partition("=")[0]
            out.append(re.sub(r"(://[^/@\s:]*):[^/@\s]*@", r"\1:…@", arg))
        return shlex.join(out)

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
            from wassette_state.store.usecases.service import Store

            ctx = click.get_current_context(silent=True)
            writing = ctx is None or writes(ctx)
            if writing and self.live is None:
                # before anything is recorded: a bad URL or bind_address is refused, not
                # found out after the commit
                from wassette_state.store.files.config import live_target

                self.live = live_target(
                    self.opts.get("wassette_url"),
                    self.opts.get("restart"),
                    data_dir=self.settings.data_dir,
                )
            self._store = Store(self.settings, writing=writing)
            self._store.command_line = self.command_line(ctx)
            _CURRENT["store"] = self._store
            _CURRENT["app"] = self
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_app = click.make_pass_decorator(App)

# The store the running command opened, for the message of a Ctrl-C (see main).
_CURRENT: dict[str, Any] = {}

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

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # `args` is the command line from the subcommand on, as typed (global options before
        # it name the store, not the change): what a transaction records as its command.
        ctx.meta[TYPED] = list(args)
        return super().resolve_command(ctx, args)

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
@click.option(
    "--wassette-url",
    envvar="WASSETTE_STATE_WASSETTE_URL",
    metavar="URL",
    help="MCP endpoint of the running Wassette to tell about each change "
    "(e.g. http://127.0.0.1:9001/mcp; default: a 'wassette-state serve' on this store, else "
    "bind_address in Wassette's config.toml; 'off': none).",
)
@click.option(
    "--restart-command",
    "restart",
    envvar="WASSETTE_STATE_RESTART_COMMAND",
    metavar="CMD",
    help="Shell command that restarts Wassette: run after a change no MCP call can serve.",
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
    _log_safely(opts["verbose"])
    app = App(**opts)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from wassette_state.cli import component, copy, policy, runtime, secret, state, watch

    for group in (
        component.component,
        policy.policy,
        policy.permission,
        secret.secret,
        secret.env,
        state.state,
        runtime.start_command,
        watch.watch,
        runtime.serve,
    ):
        cli.add_command(group)
    state.state.add_command(copy.copy_cmd)
    # The same command objects once more at the top level: `export FILE` is `state export FILE`.
    for name in STATE_SHORTCUTS:
        cli.add_command(state.state.commands[name], name)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every refusal is one `Error:` line and an exit code from the design."""
    from wassette_state.cli.output import OutputFailed, escape
    from wassette_state.store.domain.errors import StoreError

    def fail(message: str, code: int) -> NoReturn:
        click.echo(f"Error: {escape(message)}", err=True)
        sys.exit(code)

    _CURRENT.clear()
    try:
        cli.main(args=argv, prog_name="wassette-state", standalone_mode=False)
        _flush_stdout()  # a write that fails only here must not pass for success
        _tell_wassette()
        if _CURRENT.get("status"):
            sys.exit(_CURRENT["status"])
    except click.exceptions.NoArgsIsHelpError as e:  # a group without a subcommand: its help
        click.echo(e.ctx.get_help(), err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort as e:
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
            fail(_interrupted(), 130)
        fail("aborted", 1)
    except click.ClickException as e:
        code = 2 if isinstance(e, click.UsageError) else e.exit_code
        fail(e.format_message().replace("\n", " "), code)
    except StoreError as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__, e.exit_code)
    except KeyboardInterrupt:
        fail(_interrupted(), 130)
    except (OutputFailed, BrokenPipeError) as e:
        _quiet_stdout()
        error = e.error if isinstance(e, OutputFailed) else e
        if error.errno == errno.EPIPE:
            # The reader went away (`| head`): no message, and no success either; 141 is
            # what a process killed by SIGPIPE reports, as `cat` or `git log` do.
            sys.exit(128 + 13)
        fail(f"cannot write the output: {e}", 1)
    except Exception as e:  # never a traceback on the terminal: it could carry a secret value
        _unexpected(e)
    sys.exit(0)


def exit_with(status: int) -> None:
    """The status the process exits with once the command is done (`serve`: Wassette's)."""
    _CURRENT["status"] = status


def _tell_wassette() -> None:
    """After a command that recorded a change: the running Wassette serves it (store.live).
    Never an error exit: the change is recorded and its files written whatever happens here."""
    app, store = _CURRENT.get("app"), _CURRENT.get("store")
    if app is None or store is None or not store.appended or app.live is None:
        return
    from wassette_state.cli.output import escape
    from wassette_state.store.live import notify

    for line in notify.tell(store, store.appended, app.live):
        click.echo(escape(line), err=True)


def _unexpected(e: BaseException) -> NoReturn:
    if os.environ.get("WASSETTE_DEBUG") == "1":
        raise e
    click.echo(
        f"Error: unexpected failure ({type(e).__name__}); rerun with WASSETTE_DEBUG=1 for details",
        err=True,
    )
    sys.exit(1)


def _flush_stdout() -> None:
    from wassette_state.cli.output import OutputFailed

    try:
        sys.stdout.flush()
    except OSError as e:
        raise OutputFailed(e) from None


def _quiet_stdout() -> None:
    """Nothing more reaches stdout (the interpreter's own flush at exit would fail again)."""
    import contextlib

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _interrupted() -> str:
    """Ctrl-C: what this process recorded before it, so nobody takes it for 'nothing done'."""
    store = _CURRENT.get("store")
    if store is not None and store.committing:
        return (
            "interrupted while recording the change; 'wassette-state history' shows whether "
            "it was recorded"
        )
    if store is not None and store.last_tx is not None:
        return (
            f"interrupted after tx {store.last_tx} was recorded; the next command brings the "
            "files up to date"
        )
    return "interrupted; nothing was recorded"


def _log_safely(verbose: bool) -> None:
    """The store's messages (paths, ids) reach stderr with control characters escaped:
    warnings always, everything with -v."""
    import logging

    from wassette_state.cli.output import escape

    class Escaping(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return escape(super().format(record))

    class Stderr(logging.StreamHandler):  # type: ignore[type-arg]
        @property  # type: ignore[override]
        def stream(self) -> Any:  # sys.stderr as it is when the record is written
            return sys.stderr

        @stream.setter
        def stream(self, _value: Any) -> None:
            pass

    logger = logging.getLogger("wassette")
    for old in [h for h in logger.handlers if type(h).__name__ == "Stderr"]:
        logger.removeHandler(old)
    handler = Stderr()
    handler.setFormatter(Escaping("wassette-state: %(message)s" if verbose else "%(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False  # the root logger (-v) prints the others' messages, not these
    if verbose:
        logger.setLevel(logging.INFO)
