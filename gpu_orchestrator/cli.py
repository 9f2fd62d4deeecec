"""The `gpu-orchestrator` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import typer

from .config import Settings, load_settings, setting_name
from .errors import OrchestratorError, SettingsError
from .logs import configure_logging

if TYPE_CHECKING:
    from .ops.http import WaitingForDatabase
    from .runtime import Runtime

log = structlog.get_logger()

app = typer.Typer(
    help="Keeps a fleet of GPU workers sized to a Postgres task queue.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


_SHADOW = typer.Option(
    False,
    "--shadow",
    help="Observe and decide, write nothing and touch no pod; log and show what it would "
    "do (also SHADOW=1).",
)


def _shadow_settings(shadow: bool) -> Settings:
    return _settings(shadow=True) if shadow else _settings()


@app.command()
def run(shadow: bool = _SHADOW) -> None:
    """Run the orchestrator loop every ORCHESTRATOR_POLL_SEC until SIGTERM/SIGINT.

    With PORT set it serves /livez, /readyz, /metrics and /status; with
    ALERT_WEBHOOK_URL set it sends alerts."""
    settings = _shadow_settings(shadow)

    async def main() -> None:
        from .loop import CycleReport
        from .ops.alert_rules import AlertConfig
        from .ops.alerts import Alerter
        from .ops.http import OpsServer, WaitingForDatabase
        from .ops.metrics import Metrics
        from .signals import stop_on_signals

        stop = stop_on_signals()
        metrics = Metrics()
        waiting = WaitingForDatabase()
        ops = None
        if settings.port is not None:  # /livez from the first second
            ops = await OpsServer(settings, waiting, waiting, metrics).start(
                host="0.0.0.0", port=settings.port
            )
        try:
            runtime = await _open_patiently(settings, stop, waiting)
            if runtime is None:
                return
            alerter = Alerter(AlertConfig.from_settings(settings))

            def observe(report: CycleReport) -> None:
                metrics.observe_cycle(report)
                alerter.observe(report)

            if ops is not None:
                ops.attach(runtime.orchestrator, runtime.store)
            try:
                await runtime.orchestrator.run_forever(
                    stop, settings.orchestrator_poll_sec, on_cycle=observe
                )
            finally:
                await alerter.aclose()
                await runtime.aclose()
        finally:
            if ops is not None:
                await ops.stop()

    _run(main())


async def _open_patiently(
    settings: Settings, stop: asyncio.Event, waiting: WaitingForDatabase
) -> Runtime | None:
    """Opens the runtime, retrying a database that is not up yet (a platform restart
    budget should not be spent on a database blip); None when stopped meanwhile.
    A refusal that waiting never heals (password, role, database name) is raised."""
    from .errors import DatabaseRefused, StoreError
    from .runtime import open_runtime

    delay = 1.0
    while True:
        try:
            return await open_runtime(settings)
        except DatabaseRefused:
            raise
        except StoreError as exc:
            waiting.reason = str(exc)
            log.warning("database_unavailable_retrying", error=str(exc), retry_in_sec=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return None
        delay = min(delay * 2, 60.0)


@app.command()
def once(shadow: bool = _SHADOW) -> None:
    """Run one cycle and print its summary as JSON (exit 1 if the store could not
    be read)."""
    settings = _shadow_settings(shadow)

    async def main() -> int:
        from .runtime import open_runtime

        runtime = await open_runtime(settings)
        try:
            report = await runtime.orchestrator.run_cycle()
            if not settings.shadow:
                await runtime.orchestrator.release_lease()
        finally:
            await runtime.aclose()
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return 1 if report.outcome == "retry" else 0

    raise typer.Exit(_run(main()))


@app.command()
def migrate(
    print_sql: bool = typer.Option(
        False,
        "--print-sql",
        help="Print every migration as one SQL script (for the Supabase SQL editor or "
        "`supabase db push`) instead of applying it; safe to run on a migrated database.",
    ),
    adopted: bool = typer.Option(
        False,
        "--adopted",
        help="With --print-sql: the script for a Headless-Wan2GP / Reigh database "
        "(everything of ours in schema `orchestrator`, nothing of the app's changed).",
    ),
    unadopt: bool = typer.Option(
        False,
        "--unadopt",
        help="With --print-sql: the script that undoes an adoption (the app's heartbeat as "
        "it was, schema `orchestrator` dropped); see docs/migrating.md.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would be done to this database; change nothing."
    ),
) -> None:
    """Apply pending database migrations (idempotent, safe to run concurrently).

    A Headless-Wan2GP / Reigh database is recognised and adopted additively: see
    --dry-run. Over the REST store (SUPABASE_URL without DATABASE_URL) nothing can
    be applied: use --print-sql and run its output in the Supabase SQL editor."""
    if (adopted or unadopt) and not print_sql:
        raise typer.BadParameter("only with --print-sql", param_hint="--adopted/--unadopt")
    if print_sql:
        from .store.migrate import ADOPTED, NATIVE, migration_script, unadopt_sql

        typer.echo(unadopt_sql() if unadopt else migration_script(ADOPTED if adopted else NATIVE))
        return
    settings = _settings()
    if settings.store_kind == "supabase":
        typer.echo(
            "gpu-orchestrator: migrations cannot run over Supabase's REST API: run "
            "`gpu-orchestrator migrate --print-sql` and apply the output in the Supabase SQL "
            "editor, or set DATABASE_URL (the session pooler, port 5432) and migrate",
            err=True,
        )
        raise typer.Exit(2)

    if dry_run:
        from .runtime import inspect, resolve_dsn
        from .store.migrate import plan_text

        async def look() -> str:
            return plan_text(await inspect(await resolve_dsn(settings)))

        typer.echo(_run(look()))
        return

    async def main() -> list[str]:
        from .runtime import migrate as apply
        from .runtime import resolve_dsn

        return await apply(await resolve_dsn(settings))

    applied = _run(main())
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@app.command()
def config() -> None:
    """Print the effective settings, secrets redacted."""
    typer.echo(json.dumps(_settings().redacted(), indent=2, default=str))


@app.command()
def enqueue(
    count: int = typer.Option(1, min=1, max=100_000, help="How many tasks to add."),
    task_type: str = typer.Option("demo", help="The tasks' task_type."),
    params: str = typer.Option("{}", help="The tasks' params, a JSON object."),
) -> None:
    """Add tasks to the queue (for trials and tests)."""
    try:
        parsed = json.loads(params)
    except ValueError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("--params must be a JSON object")
    settings = _settings()

    async def main() -> int:
        from .runtime import connect_store

        store = await connect_store(settings)  # never migrates silently
        try:
            return await store.enqueue_tasks([{"task_type": task_type, "params": parsed}] * count)
        finally:
            await store.close()

    typer.echo(f"enqueued {_run(main())} task(s)")


@app.command()
def simulate(
    scenario: str | None = typer.Option(
        None, "--scenario", help="A named scenario (see --all for every name)."
    ),
    policy: str = typer.Option(
        "current", "--policy", help="current (ours) or baseline (the system we replace)."
    ),
    every: bool = typer.Option(
        False, "--all", help="Every scenario under both policies: the scorecard table."
    ),
    seed: int = typer.Option(0, "--seed", help="The random seed: a seed replays the same run."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a PNG per scenario into this directory (the plot extra)."
    ),
) -> None:
    """Replay a scenario in the simulator over the real policy and print its scorecard.

    Deterministic for a seed; no database, no provider, no environment settings."""
    from .sim.engine import simulate as play
    from .sim.policies import POLICIES
    from .sim.scenarios import SCENARIOS
    from .sim.scenarios import scenario as named
    from .sim.scorecard import score, table

    if every == (scenario is not None):
        raise typer.BadParameter("give --scenario NAME or --all", param_hint="--scenario")
    if scenario is not None and scenario not in SCENARIOS:
        raise typer.BadParameter(
            f"{scenario!r}: accepted: {', '.join(SCENARIOS)}", param_hint="--scenario"
        )
    if policy not in POLICIES:
        raise typer.BadParameter(
            f"{policy!r}: accepted: {', '.join(POLICIES)}", param_hint="--policy"
        )
    names = list(SCENARIOS) if scenario is None else [scenario]
    policies = list(POLICIES.values()) if every else [POLICIES[policy]]
    runs = [play(named(name), p, seed) for name in names for p in policies]
    typer.echo(table([score(run) for run in runs]))
    if plot is not None:
        from .sim.plot import plot_runs

        for path in plot_runs(runs, plot):
            typer.echo(f"wrote {path}")


@app.command()
def worker() -> None:
    """Run the worker agent (inside a pod): heartbeat, claim, run, report.
    Configured by WORKER_ID, DATABASE_URL and the WORKER_* variables."""
    settings = _settings()
    from .worker.agent import run_worker

    raise typer.Exit(_run(run_worker(settings)))


@app.command()
def demo(
    tasks: int = typer.Option(40, min=1, max=1000, help="Demo tasks to enqueue."),
    max_gpus: int = typer.Option(4, min=1, max=16, help="MAX_ACTIVE_GPUS for the demo."),
    data_dir: Path | None = typer.Option(None, help="Where the embedded Postgres lives."),
    scenario: str = typer.Option(
        "scale",
        help="scale: a batch up and down. boot-failures: the seed runbook's story, a broken "
        "image trips the breaker, a probe succeeds once it is fixed, spawning ramps back.",
    ),
) -> None:
    """Spawn local workers for demo tasks on an embedded Postgres and watch them.

    The queue drains, then the fleet scales back down. Never touches DATABASE_URL.
    The demo's own lines tell the story (breaker transitions included), so logs are
    quiet (errors only) unless LOG_LEVEL is set."""
    settings = _settings()
    if "LOG_LEVEL" not in os.environ:
        configure_logging(settings.log_format, "ERROR")
    from .demo import Scenario, run_demo

    try:
        chosen = Scenario(scenario)
    except ValueError:
        raise typer.BadParameter(
            f"{scenario!r}: accepted: {', '.join(s.value for s in Scenario)}",
            param_hint="--scenario",
        ) from None
    raise typer.Exit(
        _run(run_demo(settings, tasks=tasks, max_gpus=max_gpus, data_dir=data_dir, scenario=chosen))
    )


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    watch: float | None = typer.Option(
        None, "--watch", min=1, help="Repeat every N seconds until interrupted."
    ),
    what_if: list[str] = typer.Option(
        [], "--set", help="NAME=VALUE: judge under another setting (changes nothing)."
    ),
    html: Path | None = typer.Option(
        None, "--html", help="Also write the status page (HTML, self-contained) to this file."
    ),
) -> None:
    """The fleet's health: breaker, failures by reason, healthy workers, queue,
    verdict and recommended action, forecast and levers.

    Exit code: 0 healthy, 1 degraded, 2 spawning blocked or no healthy worker while
    tasks wait, 3 state unreadable."""
    overrides: dict[str, str] = {}
    for item in what_if:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--set")
        try:
            overrides[setting_name(name)] = value
        except SettingsError as exc:
            raise typer.BadParameter(str(exc), param_hint="--set") from None
    settings = _settings(**{k.lower(): v for k, v in overrides.items()})

    async def once() -> int:
        from .ops.health import Verdict, read_report, render_text

        events: list[dict[str, Any]] = []
        try:
            report = await read_report(settings, overrides, events)
        except OrchestratorError as exc:
            if as_json:
                typer.echo(json.dumps({"verdict": "unknown", "exit_code": 3, "error": str(exc)}))
            else:
                typer.echo(f"verdict: UNKNOWN (exit 3): cannot read state: {exc}")
            return int(Verdict.UNKNOWN)
        typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else render_text(report))
        if html is not None:
            from .ops.page import render_page

            await asyncio.to_thread(html.write_text, render_page(report, events), "utf-8")
        return int(report.verdict)

    code = _run(once())
    try:
        while watch:
            time.sleep(watch)
            typer.echo("")
            code = _run(once())
    except KeyboardInterrupt:  # Ctrl-C ends --watch with the last verdict's code
        pass
    raise typer.Exit(code)


def _print_rows(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    """JSON, or an aligned table under a header; a missing value is an empty cell."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("(none)")
        return
    cells = [[("" if row.get(c) is None else str(row[c])) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[n]) for line in cells)) for n, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


# The task statuses of the queue (DESIGN §3), in their stored spelling.
TASK_STATUSES = ("Queued", "In Progress", "Complete", "Failed", "Cancelled")


def _task_status(given: str | None) -> str | None:
    """`given` in its stored spelling, whatever its case; exit 2 naming the accepted
    values when it is none of them."""
    if given is None:
        return None
    for status in TASK_STATUSES:
        if status.lower() == given.strip().lower():
            return status
    raise typer.BadParameter(
        f"{given!r} is not a task status; accepted: {', '.join(TASK_STATUSES)}",
        param_hint="--status",
    )


@app.command("spawn")
def spawn_cmd(
    count: int = typer.Option(1, "--count", min=1, max=100, help="Workers to launch."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    actor: str | None = typer.Option(None, "--actor", help="Who. Default: $USER@hostname."),
) -> None:
    """Ask for more workers (audited). The leader launches them in its next cycle,
    never above MAX_ACTIVE_GPUS, with the kill switch on or during a billing hold;
    with no leader running, this command leads that cycle itself.

    Exit code: 0 when workers were launched (some may have been refused, each
    named) or the request waits for the running leader; 1 when none was launched
    or a launch failed."""
    settings = _settings()
    from .ops.operator import spawn

    report = _run(spawn(settings, count, _who(actor), _why(reason)))
    served = None if report.plan is None else report.plan.served_requests
    if served is None:
        typer.echo(
            f"request recorded; {report.reason or report.outcome}: the leader carries it out"
        )
        raise typer.Exit(0 if report.outcome == "skipped" else 1)
    launched = [r for r in report.results if r.kind.value == "spawn" and r.reason.value == "manual"]
    for r in launched:
        typer.echo(f"{r.outcome}: {r.worker_id} {r.error or ''}".rstrip())
    if served.allowed < served.asked:
        held = ", ".join(h.value for h in served.held_back)
        typer.echo(f"{served.asked - served.allowed} not launched: {held}")
    ok = bool(launched) and all(r.outcome == "done" for r in launched)
    raise typer.Exit(0 if ok else 1)


@app.command()
def drain(
    worker_id: str = typer.Argument(..., help="The worker (pod name)."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    actor: str | None = typer.Option(None, "--actor", help="Who. Default: $USER@hostname."),
) -> None:
    """Stop a worker from claiming; the loop terminates it once idle (audited)."""
    settings = _settings()
    from .ops.operator import drain as drain_worker

    _run(drain_worker(settings, worker_id, _who(actor), _why(reason)))
    typer.echo(f"{worker_id}: draining")


@app.command()
def terminate(
    worker_id: str = typer.Argument(..., help="The worker (pod name)."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    actor: str | None = typer.Option(None, "--actor", help="Who. Default: $USER@hostname."),
) -> None:
    """Terminate a worker now: its tasks are requeued, its pod deleted (audited)."""
    settings = _settings()
    from .ops.operator import terminate as terminate_worker

    _run(terminate_worker(settings, worker_id, _who(actor), _why(reason)))
    typer.echo(f"{worker_id}: terminated")


@app.command()
def workers(
    limit: int = typer.Option(50, min=1, max=10_000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List workers, newest first."""
    settings = _settings()
    from .ops.operator import listing

    rows = _run(listing(settings, "workers", limit=limit))
    _print_rows(
        rows, as_json, ("id", "status", "last_heartbeat", "tasks_completed", "termination_reason")
    )


@app.command()
def tasks(
    status: str | None = typer.Option(
        None, help="Only this status (any case): Queued, In Progress, Complete, Failed, Cancelled."
    ),
    limit: int = typer.Option(50, min=1, max=10_000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List tasks, newest first."""
    wanted = _task_status(status)
    settings = _settings()
    from .ops.operator import listing

    rows = _run(listing(settings, "tasks", status=wanted, limit=limit))
    _print_rows(rows, as_json, ("id", "status", "worker_id", "attempts", "error_message"))


@app.command()
def logs(
    worker: str | None = typer.Option(None, "--worker", help="Only this worker's lines."),
    task: str | None = typer.Option(None, "--task", help="Only this task's lines."),
    limit: int = typer.Option(100, min=1, max=100_000, help="How many of the newest lines."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show log lines from system_logs (worker start-up steps, task outcomes)."""
    settings = _settings()
    from .ops.operator import listing

    rows = _run(listing(settings, "logs", worker_id=worker, task_id=task, limit=limit))
    _print_rows(rows, as_json, ("timestamp", "worker_id", "log_level", "message"))


breaker_app = typer.Typer(help="The failure-rate breaker's operator levers.", no_args_is_help=True)
app.add_typer(breaker_app, name="breaker")

_REASON = typer.Option(..., "--reason", help="Why (recorded in the audit log).")
_ACTOR = typer.Option(
    None, "--actor", help="Who (recorded in the audit log). Default: $USER@hostname."
)


def _who(actor: str | None) -> str:
    return actor or f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()}"


def _why(reason: str) -> str:
    if not reason.strip():
        raise typer.BadParameter("--reason must say why", param_hint="--reason")
    return reason.strip()


def _record_lever(kind: str, reason: str, actor: str | None) -> None:
    """Appends an audited operator event; the next cycle acts on it."""
    reason = _why(reason)
    settings = _settings()

    async def record() -> None:
        from .runtime import connect_store

        store = await connect_store(settings)  # never migrates silently
        try:
            await store.record_event(kind, _who(actor), reason.strip(), fence=None)
        finally:
            await store.close()

    _run(record())
    typer.echo(f"recorded {kind} by {_who(actor)}: {reason.strip()}")


@breaker_app.command("reset")
def breaker_reset(reason: str = _REASON, actor: str | None = _ACTOR) -> None:
    """Forgive every worker failure before now (audited).

    An open breaker closes on the next cycle; recovery starts in probation (one
    booting worker until a new worker proves itself)."""
    _record_lever("breaker_reset", reason, actor)


class SpawningLever(StrEnum):
    pause = "pause"
    resume = "resume"


@app.command()
def spawning(
    lever: SpawningLever = typer.Argument(..., help="pause or resume"),
    reason: str = _REASON,
    actor: str | None = _ACTOR,
) -> None:
    """Pause or resume ordinary spawns (audited).

    Breaker probes still run while paused; kill-switch stops those too."""
    _record_lever(f"spawning_{lever.value}d", reason, actor)


class Switch(StrEnum):
    on = "on"
    off = "off"


@app.command("kill-switch")
def kill_switch(
    state: Switch = typer.Argument(..., help="on or off"),
    reason: str = _REASON,
    actor: str | None = _ACTOR,
) -> None:
    """Stop (on) or allow (off) every spawn, breaker probes included (audited).

    Running workers are left alone."""
    _record_lever(f"kill_switch_{state.value}", reason, actor)


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        print(f"gpu-orchestrator: {exc}", file=sys.stderr)
        sys.exit(2)
    except OrchestratorError as exc:
        print(f"gpu-orchestrator: {exc}", file=sys.stderr)
        sys.exit(1)
