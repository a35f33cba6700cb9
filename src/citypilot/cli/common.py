"""What every command shares: loading the configuration, reporting errors without tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any, Awaitable, Callable, Iterator, NoReturn, TypeVar

import typer
from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config, ConfigError, load_config
from citypilot.logs import configure_logging
from citypilot.runtime.errors import StartupError
from citypilot.runtime.infrastructure import Infrastructure

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def get_config(ctx: typer.Context, **overrides: Any) -> Config:
    try:
        config = load_config(ctx.obj.get("config_file") if ctx.obj else None, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc), 2)
    configure_logging(config.log_level if ctx.obj and ctx.obj.get("verbose") else "warning", config.log_format)
    return config


def require_free_http_port(config: Config, option: str = "--port (or CITYPILOT_HTTP_PORT)") -> None:
    """Refuse to start, saying what to do, when another program listens on the configured HTTP port."""
    from citypilot.runtime.ports import port_is_free

    if not port_is_free(config.http_host, config.http_port):
        fail(f"cannot serve HTTP on {config.http_host}:{config.http_port}: another program is listening there. "
             f"Use {option} to choose a free port.")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so that ``finally`` blocks stop the embedded servers."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def database(config: Config) -> Iterator[str]:
    """The database URL, with the embedded server started (or joined) for the command's duration."""
    infra = Infrastructure(config, with_nats=False)
    try:
        with sigterm_as_interrupt():
            endpoints = infra.start()
            yield endpoints.database_url
    except StartupError as exc:
        fail(str(exc))
    finally:
        infra.stop()


def run_with_pool(url: str, work: Callable[[AsyncConnectionPool], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
            await pool.open(wait=True, timeout=15)
            return await work(pool)
    return asyncio.run(main())


def read_new_password(password_stdin: bool) -> str:
    """A new password from standard input or a prompt (typed twice), refused if too weak."""
    from citypilot.auth.passwords import WeakPassword, check_strength

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on standard input")
    elif not sys.stdin.isatty():
        fail("no terminal to ask the password: use --password-stdin")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_strength(password)
    except WeakPassword as exc:
        fail(str(exc), 2)
    return password
