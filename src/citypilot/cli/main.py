"""``citypilot``: run the control centre and administer it from a terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from citypilot import __version__
from citypilot.config import SETTINGS
from citypilot.runtime.errors import StartupError

from .common import database, fail, get_config, read_new_password, run_with_pool

app = typer.Typer(help="citypilot: the urban hypervisor of a metropolis's connected control centre.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
user_app = typer.Typer(help="Manage local accounts and their roles.", no_args_is_help=True)
assets_app = typer.Typer(help="Import and export the equipment registry (CSV, GeoJSON).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema: apply migrations, show the version.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures as one JSON line.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(assets_app, name="assets")
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")
audit_app = typer.Typer(help="Audit the event journal (tamper evidence).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _add_rules_app() -> None:
    from .rules import rules_app

    app.add_typer(rules_app, name="rules")


_add_rules_app()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"citypilot {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file (or CITYPILOT_CONFIG)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at the configured level (default: warnings only) for admin commands."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = {"config_file": config, "verbose": verbose}


@app.command()
def serve(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, help="Address to listen on (default 127.0.0.1, or CITYPILOT_HTTP_HOST)."),
    port: Optional[int] = typer.Option(None, help="Port to listen on (default 8080, or CITYPILOT_HTTP_PORT)."),
) -> None:
    """Run the control centre (embedded PostgreSQL and NATS unless external URLs are set)."""
    from .serve import run_server

    ctx.obj["verbose"] = True
    config = get_config(ctx, http_host=host, http_port=port)
    run_server(config)


@app.command()
def worker(
    ctx: typer.Context,
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=32, help="Workers in this process."),
) -> None:
    """Run ingest workers alone (scale-out): they share the device stream with every other worker."""
    from .worker import run_workers

    ctx.obj["verbose"] = True
    run_workers(get_config(ctx), workers)


@app.command("config")
def show_config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective configuration (secrets masked) and where each value comes from."""
    config = get_config(ctx)
    rows = config.describe()
    if as_json:
        typer.echo(json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=2))
        return
    env = {s.name: s.env for s in SETTINGS}
    width = max(len(env[name]) for name, _, _ in rows)
    for name, value, source in rows:
        typer.echo(f"{env[name]:<{width}}  {value}  ({source})")


# --- accounts ---------------------------------------------------------------------------------------

@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="User name (lowercase letters, digits, . _ -)."),
    role: str = typer.Option(..., "--role", "-r", help="admin, supervisor, operator, police, service_coordinator, field_agent, switchboard, dpo, read_only."),
    service: Optional[str] = typer.Option(None, help="Service of a service_coordinator or field_agent (e.g. lighting)."),
    display_name: Optional[str] = typer.Option(None, help="Full name shown in the UI and the journal."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Create a local account with a role."""
    from citypilot.auth import accounts
    from citypilot.equipment.catalog import default_catalog

    services = dict(default_catalog().services)
    try:
        accounts.check_account(name, role, service, services)
    except accounts.AccountError as exc:
        fail(str(exc), 2)
    password = read_new_password(password_stdin)
    config = get_config(ctx)

    async def work(pool) -> None:
        from citypilot.journal.store import record_action

        async with pool.connection() as conn:
            async with conn.transaction():
                await accounts.add_user(conn, name, role, password, services=services, service=service,
                                        display_name=display_name)
                await record_action(conn, cli_actor(), "account.created", f"account {name} created by {cli_actor()}: "
                                    f"role {role}", {"username": name, "role": role, "service": service})

    with database(config) as url:
        try:
            run_with_pool(url, work)
        except accounts.UserExists as exc:
            fail(str(exc))
    typer.echo(f"user {name} created with role {role}" + (f" ({service})" if service else ""))


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List accounts with their role and service."""
    from citypilot.auth import accounts

    config = get_config(ctx)

    async def work(pool):
        async with pool.connection() as conn:
            return await accounts.list_users(conn)

    with database(config) as url:
        users = run_with_pool(url, work)
    for user in users:
        flags = " (disabled)" if user["disabled"] else ""
        typer.echo(f"{user['username']:<24} {user['role']:<20} {user['service'] or '':<14}{flags}")


def cli_actor() -> str:
    """Who acts from a terminal, for the journal: the system account running the command."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _change_account(ctx: typer.Context, change, name: str, data: dict) -> None:
    """Run one account change (``change(conn)``) in the database, journaled with what changed (never a
    password); an unknown user is a clean error."""
    from citypilot.auth import accounts
    from citypilot.journal.store import record_action

    config = get_config(ctx)

    async def work(pool) -> None:
        async with pool.connection() as conn:
            async with conn.transaction():
                await change(conn)
                what = ", ".join(f"{k} {v}" for k, v in data.items())
                await record_action(conn, cli_actor(), "account.updated",
                                    f"account {name} updated by {cli_actor()}: {what}", {"username": name, **data})

    with database(config) as url:
        try:
            run_with_pool(url, work)
        except accounts.AccountError as exc:
            fail(str(exc))


@user_app.command("role")
def user_role(ctx: typer.Context, name: str = typer.Argument(...), role: str = typer.Argument(..., help="The new role."),
              service: Optional[str] = typer.Option(None, help="Service of a service_coordinator or field_agent.")) -> None:
    """Give an account another role (effective at once, open sessions included)."""
    from citypilot.auth import accounts
    from citypilot.equipment.catalog import default_catalog

    services = dict(default_catalog().services)
    try:
        accounts.check_account(name, role, service, services)
    except accounts.AccountError as exc:
        fail(str(exc), 2)
    _change_account(ctx, lambda conn: accounts.set_role(conn, name, role, service, services=services), name,
                    {"role": role, "service": service})
    typer.echo(f"user {name} now has the role {role}" + (f" ({service})" if service else ""))


@user_app.command("passwd")
def user_passwd(ctx: typer.Context, name: str = typer.Argument(...),
                password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input.")) -> None:
    """Set a new password (ends the user's open sessions)."""
    from citypilot.auth import accounts

    password = read_new_password(password_stdin)
    _change_account(ctx, lambda conn: accounts.set_password(conn, name, password), name, {"password": "changed"})
    typer.echo(f"password of {name} changed")


@user_app.command("disable")
def user_disable(ctx: typer.Context, name: str = typer.Argument(...),
                 enable: bool = typer.Option(False, "--enable", help="Enable the account again.")) -> None:
    """Disable an account (its sessions end at once), or enable it again."""
    from citypilot.auth import accounts

    _change_account(ctx, lambda conn: accounts.set_disabled(conn, name, not enable), name, {"disabled": not enable})
    typer.echo(f"user {name} {'enabled' if enable else 'disabled'}")


# --- registry ---------------------------------------------------------------------------------------

@assets_app.command("import")
def assets_import(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV or GeoJSON file."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="csv or geojson (default: from the file name)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything (against the registry too) and report what would change; write nothing."),
    actor: str = typer.Option("cli", help="Name recorded in the assets' history."),
) -> None:
    """Import assets from CSV or GeoJSON: all or nothing, re-import updates without duplicates."""
    from citypilot.equipment.catalog import default_catalog
    from citypilot.geo.communes import metropole
    from citypilot.registry import service
    from citypilot.registry.formats import FORMATS, detect_format
    from citypilot.registry.sheet import ValidationFailed

    data = file.read_bytes()
    fmt = format or detect_format(file.name, None, data[:64])
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}: csv or geojson", 2)
    catalog, communes = default_catalog(), metropole()

    def report(exc: ValidationFailed) -> None:
        for problem in exc.problems:
            typer.echo(f"{file}: {problem}", err=True)
        if exc.total > len(exc.problems):
            typer.echo(f"... and {exc.total - len(exc.problems)} more problem(s)", err=True)
        fail(f"{file}: {exc.total} problem(s); nothing was imported")

    try:  # file errors first, before any server is started
        service.parse_and_validate(data, fmt, catalog, communes)
    except ValidationFailed as exc:
        report(exc)
    config = get_config(ctx)
    with database(config) as url:
        try:
            result = run_with_pool(url, lambda pool: service.import_file(
                pool, data, fmt, actor=actor, source=f"import:{file.name}", catalog=catalog, communes=communes,
                dry_run=dry_run))
        except ValidationFailed as exc:
            report(exc)
    suffix = "; nothing written (--dry-run)" if dry_run else ""
    typer.echo(f"{file}: {result.created} created, {result.updated} updated, {result.unchanged} unchanged{suffix}")


@assets_app.command("export")
def assets_export(
    ctx: typer.Context,
    format: str = typer.Option("csv", "--format", "-f", help="csv or geojson."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    kind: Optional[str] = typer.Option(None, help="Only these kinds (comma-separated)."),
    commune: Optional[str] = typer.Option(None, help="Only these communes (INSEE codes, comma-separated)."),
) -> None:
    """Export the registry (or part of it) as CSV or GeoJSON; re-importing the export changes nothing."""
    from citypilot.equipment.catalog import default_catalog
    from citypilot.geo.communes import metropole
    from citypilot.registry import repository as repo
    from citypilot.registry.formats import write_csv, write_geojson

    if format not in ("csv", "geojson"):
        fail("format must be csv or geojson", 2)
    catalog, communes = default_catalog(), metropole()
    kinds = [k.strip() for k in kind.split(",")] if kind else []
    for k in kinds:
        if k not in catalog.kinds:
            fail(f"unknown kind {k!r} (known: {', '.join(sorted(catalog.kinds))})", 2)
    flt = repo.AssetFilter(kinds=kinds, communes=[c.strip() for c in commune.split(",")] if commune else [])
    attribute_names = sorted({a.name for k in (kinds or catalog.kinds) for a in catalog.kinds[k].attributes})
    config = get_config(ctx)

    async def work(pool):
        async with pool.connection() as conn:
            return [repo.row_to_asset(r, communes) async for r in repo.stream_assets(conn, flt)]

    with database(config) as url:
        rows = run_with_pool(url, work)
    chunks = write_csv(rows, attribute_names) if format == "csv" else write_geojson(rows)
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        for chunk in chunks:
            out.write(chunk)
    finally:
        if output:
            out.close()
    if output:
        typer.echo(f"{len(rows)} asset(s) written to {output}")


# --- database ---------------------------------------------------------------------------------------

@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending schema migrations (also done at every start)."""
    from citypilot.db.migrations import current_version

    config = get_config(ctx)
    with database(config) as url:
        typer.echo(f"schema at version {current_version(url)}")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the journal's hash chain: every entry carries the hash of the previous one, ids run without
    a gap, the head matches. Exit 1 at the first broken link, naming the entry."""
    import psycopg

    from citypilot.journal.audit import verify

    config = get_config(ctx)
    with database(config) as url:
        async def work(_pool: object) -> object:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                return await verify(conn)

        verdict = run_with_pool(url, work)
    if not verdict.ok:
        fail(f"journal chain broken: {verdict.problem} (checked {verdict.entries} entries before it)")
    typer.echo(f"journal chain intact: {verdict.entries} entries; head {verdict.head_id} {verdict.head_hash}")


# --- an external NATS's users --------------------------------------------------------------------------

@app.command("nats-users")
def nats_users(
    ctx: typer.Context,
    user: str = typer.Option("citypilot", help="citypilot's own user on your NATS (the user of CITYPILOT_NATS_URL)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read that user's password from standard input."),
) -> None:
    """Print a NATS `authorization` block for an external NATS: citypilot's own user, then one user per
    active device credential (their MQTT logins, each allowed only its own topics). The embedded NATS
    needs none of this: citypilot keeps its users itself."""
    import bcrypt

    from citypilot.auth.broker_users import load_device_users
    from citypilot.runtime.embedded_nats import render_users

    OPERATOR_BCRYPT_COST = 12  # noqa: N806

    if not password_stdin:
        fail("give citypilot's NATS password on standard input, with --password-stdin", 2)
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("no password on standard input")
    config = get_config(ctx)
    with database(config) as url:
        users = load_device_users(url)
    # The operator's password may be one a person chose: a slow hash (unlike the devices' random tokens).
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(OPERATOR_BCRYPT_COST)).decode()
    try:
        lines = render_users(hashed, users, internal_user=user)
    except ValueError as exc:
        fail(str(exc), 2)
    typer.echo(f"# Written by `citypilot nats-users`: {len(users)} device credential(s). Write it again, and reload\n"
               "# NATS (nats-server --signal reload), whenever credentials are issued or revoked.")
    typer.echo("\n".join(lines))


# --- the virtual city -------------------------------------------------------------------------------

@app.command()
def sim(
    ctx: typer.Context,
    scenario: str = typer.Option("normal", help="normal, snow, flood, cabinet_power_cut, major_accident or building_fire."),
    speed: float = typer.Option(1.0, help="How many times faster than real time the city lives (devices still report on real clocks)."),
    start: Optional[str] = typer.Option(None, help="Simulated date and time to start at (ISO 8601; Dijon time if no zone). Default: now."),
    scale: int = typer.Option(1, help="Multiply the city's equipment (1 = Dijon métropole, 10 = a Paris-sized city)."),
    seed: int = typer.Option(1, help="Random seed: the same seed and scale give the same city and the same day."),
    mqtt: Optional[str] = typer.Option(None, help="MQTT endpoint mqtt://[user:password@]host:port (default: the configured citypilot's)."),
    username: Optional[str] = typer.Option(None, help="MQTT user name (default: citypilot's internal login on an embedded broker)."),
    password: Optional[str] = typer.Option(None, envvar="CITYPILOT_SIM_MQTT_PASSWORD", help="MQTT password (or CITYPILOT_SIM_MQTT_PASSWORD)."),
    connections: int = typer.Option(4, min=1, max=64, help="MQTT connections the devices share (each device always uses the same one)."),
    duration: Optional[float] = typer.Option(None, min=0, help="Stop after this many seconds (default: run until Ctrl-C)."),
    write_registry: Optional[Path] = typer.Option(None, "--write-registry", help="Write the city's equipment registry to this file (.csv or .geojson) and exit."),
    registry_format: Optional[str] = typer.Option(None, "--format", help="Registry format for --write-registry: csv or geojson (default: from the file name)."),
) -> None:
    """Run the simulated metropole: its devices speak the device protocol over MQTT to a running citypilot."""
    from .sim import SimOptions, check_options, default_target, parse_start, run_sim
    from .sim import write_registry as write_registry_file

    check_options(scale, speed, scenario)
    if write_registry is not None:
        write_registry_file(write_registry, registry_format, seed, scale)
        return
    begin = parse_start(start)  # every option checked before looking for a citypilot to talk to
    config = get_config(ctx)
    from citypilot.sim.runner import MqttTarget, SimError

    try:
        target = MqttTarget.parse(mqtt, username, password) if mqtt else default_target(config, username, password)
    except SimError as exc:
        fail(str(exc), 2)
    run_sim(SimOptions(seed, scale, speed, begin, scenario, connections, duration), target)


@app.command()
def demo(
    ctx: typer.Context,
    port: Optional[int] = typer.Option(None, help="HTTP port of the control centre (default 8080, or CITYPILOT_HTTP_PORT)."),
    scenario: str = typer.Option("normal", help="normal, snow, flood, cabinet_power_cut, major_accident or building_fire."),
    speed: float = typer.Option(30.0, help="How many times faster than real time the city lives (30: a day in 48 minutes, a few incidents a minute)."),
    start: Optional[str] = typer.Option(None, help="Simulated date and time to start at (default: now)."),
    scale: int = typer.Option(1, help="Multiply the city's equipment (1 = Dijon métropole)."),
    seed: int = typer.Option(1, help="Random seed of the city."),
    data_dir: Optional[Path] = typer.Option(None, help="Where the demo keeps its data (default: a citypilot-demo directory beside the usual one)."),
) -> None:
    """The control centre on embedded defaults with the simulated Dijon métropole: import, simulate, print the URL and a login."""
    from .demo import demo_data_dir, run_demo
    from .sim import SimOptions, check_options, parse_start

    check_options(scale, speed, scenario)
    ctx.obj["verbose"] = False
    config = get_config(ctx, http_port=port, data_dir=str(data_dir or demo_data_dir()))
    run_demo(config, SimOptions(seed, scale, speed, parse_start(start), scenario, 4, None))


# --- benchmarks -------------------------------------------------------------------------------------

@bench_app.command("import")
def bench_import(
    ctx: typer.Context,
    assets: int = typer.Option(40_000, "--assets", "-n", min=10, max=2_000_000, help="Number of assets."),
    seed: int = typer.Option(1, help="Random seed of the synthetic registry."),
) -> None:
    """Registry import benchmark on a throw-away database: first import, idempotent re-import, 1 % changed."""
    from citypilot.bench.import_bench import run_import_benchmark

    config = get_config(ctx)
    try:
        figures = run_import_benchmark(config, assets, seed)
    except StartupError as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("startup")
def bench_startup(runs: int = typer.Option(3, min=1, max=20, help="Warm restarts after the cold start.")) -> None:
    """Time from `citypilot serve` to a ready /readyz (cold and warm), and to a clean stop."""
    from citypilot.bench.startup_bench import run_startup_benchmark

    try:
        figures = run_startup_benchmark(runs)
    except RuntimeError as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("ingest")
def bench_ingest(
    ctx: typer.Context,
    messages: int = typer.Option(100_000, "--messages", "-n", min=100, max=5_000_000, help="Messages to publish."),
    mode: str = typer.Option("single", help="single (one reading a message) or gateway (a cabinet reports its ~30 lights)."),
    publishers: int = typer.Option(8, min=1, max=256, help="MQTT connections publishing in parallel."),
    workers: int = typer.Option(1, min=1, max=16, help="`citypilot worker` processes."),
    rate: float = typer.Option(0, min=0, help="Messages/s to publish at (0: as fast as the broker takes them)."),
    kill_worker_after: Optional[float] = typer.Option(None, help="SIGKILL a worker this many seconds in (then start another)."),
) -> None:
    """Real MQTT devices -> JetStream -> workers -> twin, on a throw-away stack; raw broker rate in the same run."""
    from citypilot.bench.ingest_bench import Plan, run_ingest_benchmark

    if mode not in ("single", "gateway"):
        fail("mode is single or gateway", 2)
    config = get_config(ctx)
    try:
        figures = run_ingest_benchmark(config, Plan(messages, mode, publishers, workers, rate, kill_worker_after))
    except (StartupError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("sim")
def bench_sim(
    ctx: typer.Context,
    scale: int = typer.Option(1, help="City scale (1 = Dijon métropole)."),
    duration: float = typer.Option(60.0, min=5, max=3600, help="Seconds the simulator runs."),
    speed: float = typer.Option(1.0, help="Simulated time speed."),
    workers: int = typer.Option(1, min=1, max=16, help="`citypilot worker` processes."),
) -> None:
    """The simulated city at a scale against a throw-away embedded stack: does this machine sustain it?"""
    from citypilot.bench.sim_bench import run_sim_benchmark

    from .sim import check_options

    check_options(scale, speed, "normal")
    config = get_config(ctx)
    try:
        figures = run_sim_benchmark(config, scale, duration, speed, workers)
    except (StartupError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("alarms")
def bench_alarms(
    ctx: typer.Context,
    rate: float = typer.Option(10_000, min=100, max=200_000, help="Background device messages a second."),
    duration: float = typer.Option(60.0, min=20, max=3600, help="Seconds of background load."),
    clients: int = typer.Option(50, min=1, max=1000, help="WebSocket clients on the live feed."),
    twin_clients: int = typer.Option(5, min=0, max=1000, help="How many of them also take the twin deltas of the whole city."),
    probes_per_s: float = typer.Option(4.0, min=0.5, max=50, help="Lamp failures a second whose latency is measured."),
    power_cut_lights: int = typer.Option(1000, min=10, max=20_000, help="Lights failing within one second, halfway."),
    workers: int = typer.Option(1, min=1, max=16, help="`citypilot worker` processes."),
    gateway: bool = typer.Option(False, help="Background as lighting-cabinet messages of 31 readings: --rate is then "
                                             "readings a second."),
) -> None:
    """Device fault to alarm on the operators' WebSocket, under background load, with a power cut halfway
    (throw-away embedded stack, a real `citypilot serve` and workers)."""
    from citypilot.bench.alarms_bench import AlarmPlan, run_alarms_benchmark

    if twin_clients > clients:
        fail(f"--twin-clients {twin_clients}: at most --clients ({clients})", 2)
    config = get_config(ctx)
    plan = AlarmPlan(rate=rate, duration_s=duration, clients=clients, twin_clients=twin_clients, probes_per_s=probes_per_s,
                     power_cut_at_s=duration / 2, power_cut_lights=power_cut_lights, workers=workers,
                     gateway=gateway)
    try:
        figures = run_alarms_benchmark(config, plan)
    except (StartupError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("requests")
def bench_requests(
    ctx: typer.Context,
    rate: float = typer.Option(200.0, min=1, max=5000, help="Open311 requests a second (open loop)."),
    duration: float = typer.Option(30.0, min=5, max=3600, help="Seconds of requests."),
    vehicles: int = typer.Option(1000, min=1, max=20_000, help="Field teams with a vehicle competing for each order."),
    recommendations: int = typer.Option(200, min=1, max=100_000, help="Nearest-team recommendations timed."),
    warmup: float = typer.Option(20.0, min=0, max=600, help="Seconds the simulated city runs before the requests."),
) -> None:
    """Open311 requests while the simulated city runs, then nearest-team recommendations among the vehicles
    (throw-away embedded stack, a real `citypilot serve`)."""
    from citypilot.bench.requests_bench import run_requests_benchmark

    config = get_config(ctx)
    try:
        figures = run_requests_benchmark(config, rate, duration, vehicles, recommendations, warmup)
    except (StartupError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("commands")
def bench_commands(
    ctx: typer.Context,
    singles: int = typer.Option(300, min=1, max=100_000, help="Commands to one light each, one after another."),
    rate: float = typer.Option(20.0, min=0.1, max=1000, help="Single commands a second."),
    zone: int = typer.Option(5000, min=1, max=30_000, help="Street lights dimmed in one batch."),
    warmup: float = typer.Option(20.0, min=0, max=600, help="Seconds the simulated city runs before the commands."),
) -> None:
    """Commands to the simulated city: single lights (POST → the device's answer applied), then a zone-wide
    dimming confirmed and approved (approval → every answer applied). Throw-away embedded stack, a real
    `citypilot serve`, the simulator's devices over MQTT."""
    from citypilot.bench.commands_bench import run_commands_benchmark

    config = get_config(ctx)
    try:
        figures = run_commands_benchmark(config, singles, rate, zone, warmup)
    except (StartupError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


@bench_app.command("map")
def bench_map(
    ctx: typer.Context,
    assets: int = typer.Option(40_000, "--assets", "-n", min=100, max=1_000_000, help="Assets on the map."),
    seconds: float = typer.Option(15.0, min=3, max=600, help="Seconds of live updates measured after the load."),
    change: float = typer.Option(0.05, min=0.001, max=1.0, help="Fraction of the assets changing every second."),
    viewport: str = typer.Option("1440x900", help="Browser window, WIDTHxHEIGHT in CSS pixels."),
) -> None:
    """The web map in headless Chromium (Debian's, driven by Playwright): load time, main-thread time per live
    update, long tasks, live-feed bytes (throw-away embedded stack, a real `citypilot serve`)."""
    from citypilot.bench.map_bench import BrowserUnavailable, MapPlan, run_map_benchmark

    width, _, height = viewport.partition("x")
    if not (width.isdigit() and height.isdigit() and 320 <= int(width) <= 7680 and 240 <= int(height) <= 4320):
        fail(f"--viewport {viewport!r}: WIDTHxHEIGHT, e.g. 1440x900", 2)
    config = get_config(ctx)
    try:
        figures = run_map_benchmark(config, MapPlan(assets=assets, seconds=seconds, change_fraction=change,
                                                    viewport=(int(width), int(height))))
    except BrowserUnavailable as exc:
        fail(str(exc), 2)
    except (StartupError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(figures))


def run() -> None:
    from citypilot.equipment.catalog import CatalogError

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except CatalogError as exc:  # the packaged or edited catalogue is wrong: say where, no traceback
        typer.echo(f"error: equipment catalogue: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
