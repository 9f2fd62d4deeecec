"""Every command of `gpu-orchestrator`, run as an operator runs it: a real process
against a real database (the local provider starts real worker processes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
import typer
from typer.testing import CliRunner

from gpu_orchestrator.cli import app
from gpu_orchestrator.store.embedded import with_database

COMMANDS = [
    ["run"], ["once"], ["migrate"], ["config"], ["enqueue"], ["worker"], ["demo"],
    ["status"], ["spawn"], ["drain"], ["terminate"], ["workers"], ["tasks"], ["logs"],
    ["breaker", "reset"], ["spawning"], ["kill-switch"], ["simulate"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_is_complete(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    assert cmd is not None and cmd.help and cmd.help.strip(), f"{command} has no description"
    for param in cmd.params:  # every option and argument says what it is for
        assert getattr(param, "help", None), f"{' '.join(command)} {param.name} has no help"


class Cli:
    def __init__(self, dsn: str, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "ORCHESTRATOR_DATA_DIR": str(data_dir),
            "ORCHESTRATOR_PROVIDER": "local",
            "ORCHESTRATOR_ID": "cli-test",
            "LOG_FORMAT": "json",
            "WORKER_HEARTBEAT_SEC": "0.5",
        }
        self.dsn = dsn

    async def __call__(self, *args: str, **env: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpu_orchestrator",
            *args,
            env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def fetch(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()


@pytest.fixture
async def cli(dsn, tmp_path):
    runner = Cli(dsn, tmp_path)
    yield runner
    await runner("kill-switch", "on", "--reason", "test teardown")
    for row in await runner.fetch("select id from workers where terminated_at is null"):
        await runner("terminate", row["id"], "--reason", "test teardown")


async def test_enqueue_adds_tasks_and_refuses_bad_params(cli):
    code, out, _ = await cli("enqueue", "--count", "3", "--params", '{"duration_sec": 0.1}')
    assert code == 0 and "enqueued 3" in out
    code, _, err = await cli("enqueue", "--params", "[1]")
    assert code == 2 and "JSON object" in err
    rows = await cli.fetch("select params from tasks")
    assert len(rows) == 3


async def test_worker_without_a_worker_id_says_so(cli):
    code, _, err = await cli("worker")
    assert code == 2 and "WORKER_ID" in err


async def test_spawn_respects_max_and_drain_and_terminate_are_audited(cli):
    code, out, _ = await cli(
        "spawn", "--count", "3", "--reason", "warm up", "--actor", "alice", MAX_ACTIVE_GPUS="2"
    )
    assert code == 0, out
    assert out.count("done:") == 2 and "1 not launched: max_active_reached" in out
    first, second = [r["id"] for r in await cli.fetch("select id from workers order by id")]

    code, out, _ = await cli("drain", first, "--reason", "rotate", "--actor", "bob")
    assert code == 0 and "draining" in out
    code, _, err = await cli("drain", first, "--reason", "again")
    assert code == 1 and "not a spawning or active worker" in err

    code, out, _ = await cli("terminate", second, "--reason", "bad node", "--actor", "carol")
    assert code == 0 and "terminated" in out
    rows = {
        r["id"]: (r["status"], r["termination_reason"])
        for r in await cli.fetch("select id, status, termination_reason from workers")
    }
    assert rows[first][0] == "terminating"
    assert rows[second] == ("terminated", "manual")
    events = [
        (r["kind"], r["actor"], r["reason"])
        for r in await cli.fetch("select kind, actor, reason from orchestrator_events order by id")
    ]
    assert events == [
        ("spawn_requested", "alice", "warm up"),
        ("spawn_requests_served", "cli-test", "operator_request"),
        ("operator_drain", "bob", "rotate"),
        ("operator_terminate", "carol", "bad node"),
    ]


async def test_levers_are_audited_and_change_the_next_plan(cli):
    await cli("enqueue", "--count", "2")
    assert (await cli("spawning", "pause", "--reason", "maintenance", "--actor", "ops"))[0] == 0
    code, out, _ = await cli("once")
    assert json.loads(out)["plan"]["held_back"] == ["spawning_paused"]
    await cli("spawning", "resume", "--reason", "done")
    await cli("kill-switch", "on", "--reason", "budget")
    code, out, _ = await cli("once")
    assert json.loads(out)["plan"]["held_back"] == ["kill_switch"]
    await cli("kill-switch", "off", "--reason", "budget ok")
    code, _, _ = await cli("breaker", "reset", "--reason", "image fixed")
    assert code == 0
    code, _, err = await cli("breaker", "reset", "--reason", "  ")
    assert code == 2 and "must say why" in err
    kinds = [r["kind"] for r in await cli.fetch("select kind from orchestrator_events order by id")]
    assert kinds == [
        "spawning_paused", "spawning_resumed", "kill_switch_on", "kill_switch_off",
        "breaker_reset",
    ]  # fmt: skip


async def test_listings_show_workers_tasks_and_logs(cli):
    await cli("spawn", "--reason", "listing test")  # first: the queue asks for none
    await cli("enqueue", "--count", "1", "--params", '{"duration_sec": 0.1}')
    (worker,) = [r["id"] for r in await cli.fetch("select id from workers")]
    for _ in range(100):  # the worker boots, heartbeats and ships its start-up log lines
        done = await cli.fetch("select 1 from tasks where status = 'Complete'")
        if done:
            break
        await asyncio.sleep(0.2)
    code, out, _ = await cli("workers", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == worker
    code, out, _ = await cli("tasks", "--json", "--status", "Complete")
    assert code == 0 and len(json.loads(out)) == 1
    code, out, _ = await cli("logs", "--worker", worker, "--json")
    assert code == 0
    messages = [line["message"] for line in json.loads(out)]
    assert any("startup" in m or "start-up" in m for m in messages), messages
    code, out, _ = await cli("logs", "--worker", "nobody")
    assert code == 0 and "(none)" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_run_serves_ops_endpoints_then_hands_the_lease_back_on_sigterm(cli):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "run",
        env={**cli.env, "ORCHESTRATOR_POLL_SEC": "0.2", "PORT": str(port)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(60):  # a first cycle, led
        while b'"event": "cycle"' not in await proc.stderr.readline():
            pass
    drain = asyncio.create_task(proc.stderr.read())  # keep the log pipe from filling up
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert (await http.get("/livez")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and "lease: leader" in ready.text
        assert "gpuorch_cycles_total" in (await http.get("/metrics")).text
        assert (await http.get("/status")).json()["verdict"] == "healthy"
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)
    await drain
    assert proc.returncode == 0
    (lease,) = await cli.fetch(
        "select holder, expires_at <= now() as free from orchestrator_leases"
    )
    assert lease["holder"] == "cli-test" and lease["free"]


@pytest.mark.e2e
async def test_demo_drains_its_queue_and_scales_down(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "demo",
        "--tasks",
        "8",
        "--max-gpus",
        "2",
        "--data-dir",
        str(tmp_path / "d"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "8 of 8 tasks complete" in out.decode()


@pytest.mark.process
async def test_piped_demo_output_tells_the_breaker_story(tmp_path):
    """Piped (no terminal), stdout and stderr together as a log would keep them: no
    JSON lines, reason codes on actions, the breaker's transitions, and a closing
    line that does not say '0 failed' as if nothing happened."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LOG_LEVEL")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "demo",
        "--scenario",
        "boot-failures",
        "--tasks",
        "8",
        "--data-dir",
        str(tmp_path / "d"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = out.decode()
    assert proc.returncode == 0, text[-2000:]
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith("{")], text[-2000:]
    assert any("spawn(queue_demand)x" in line for line in lines)
    assert any("breaker opened:" in line for line in lines)
    assert not [line for line in lines if line.split("] ", 1)[-1].startswith("ok ")]
    closing = lines[-1]
    assert "worker failures:" in closing and "boot_failed" in closing, closing
    assert "breaker opened (breaker_tripped)" in closing and "closed" in closing, closing


async def test_an_unmigrated_database_is_explained_and_never_migrated_silently(empty_dsn, tmp_path):
    cli = Cli(empty_dsn, tmp_path)
    advice = "no gpu-orchestrator schema (or an older one): run `gpu-orchestrator migrate`"
    for args in (["workers"], ["tasks"], ["logs"]):
        code, _, err = await cli(*args)
        assert code == 1 and advice in err and "Traceback" not in err, (args, err)
    code, out, _ = await cli("status")
    assert code == 3 and advice in out
    for args in (
        ["enqueue"],
        ["spawn", "--reason", "x"],
        ["breaker", "reset", "--reason", "x"],
    ):
        code, _, err = await cli(*args)
        assert code == 1 and advice in err, (args, err)
    tables = await cli.fetch("select count(*) from pg_tables where schemaname = 'public'")
    assert tables[0][0] == 0  # nothing was migrated behind the operator's back


def _postgres_serving(data_dir: Path) -> list[int]:
    """Pids of postgres servers whose data directory is under `data_dir`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/postgres") and str(data_dir).encode() in b" ".join(args):
            found.append(int(proc.name))
    return found


async def test_the_embedded_postgres_we_start_is_stopped_when_we_exit_unless_kept(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for keep, data in (("false", tmp_path / "a"), ("true", tmp_path / "b")):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpu_orchestrator",
            "once",
            env={
                **env,
                "ORCHESTRATOR_DATA_DIR": str(data),
                "ORCHESTRATOR_PROVIDER": "local",
                "EMBEDDED_POSTGRES_KEEP": keep,
                "LOG_FORMAT": "json",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
    try:
        assert _postgres_serving(tmp_path / "a") == []
        assert _postgres_serving(tmp_path / "b") != []  # asked to keep it
    finally:
        import pgserver

        pgserver.get_server(tmp_path / "b" / "pg", cleanup_mode="stop").cleanup()
    assert _postgres_serving(tmp_path / "b") == []


async def test_listings_have_headers_empty_cells_and_case_insensitive_statuses(cli):
    await cli("enqueue", "--count", "2")
    code, out, _ = await cli("tasks")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == [
        "id",
        "status",
        "worker_id",
        "attempts",
        "error_message",
    ]
    assert len(rows) == 2 and "None" not in out
    code, out, _ = await cli("tasks", "--status", "queued")
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = await cli("tasks", "--status", "in progress")
    assert code == 0 and out.strip() == "(none)"
    code, _, err = await cli("tasks", "--status", "done")
    flat = " ".join(err.replace("│", " ").split())  # typer boxes and wraps the message
    assert code == 2 and "accepted: Queued, In Progress, Complete, Failed, Cancelled" in flat
    code, out, _ = await cli("workers")
    assert code == 0 and out.strip() == "(none)"


async def test_run_serves_livez_while_it_waits_for_a_database_that_is_down(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",  # nothing listens
        "ORCHESTRATOR_DATA_DIR": str(tmp_path),
        "ORCHESTRATOR_PROVIDER": "local",
        "PORT": str(port),
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(100):  # served within the first seconds
                try:
                    live = await http.get("/livez")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            assert live.status_code == 200 and "waiting for the database" in live.text
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.text.startswith(
                "db: failed: StoreError: not connected yet: cannot connect"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0


async def test_run_exits_1_at_once_for_a_database_that_does_not_exist(pg_admin_dsn, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": with_database(pg_admin_dsn, "no_such_database"),
        "ORCHESTRATOR_DATA_DIR": str(tmp_path),
        "ORCHESTRATOR_PROVIDER": "local",
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)  # not retried forever
    assert proc.returncode == 1
    (line,) = err.decode().strip().splitlines()
    assert "refused the connection" in line and "no_such_database" in line
