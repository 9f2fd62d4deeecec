"""The status page in a real browser: a daemon (`gpu-orchestrator run`) whose image
is broken trips the breaker; headless Chromium (Debian's `chromium`) loads `GET /`
and the rendered DOM must show what `status --json` says. Plus the page's escaping."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from policy_builders import ACTIVE, snap, worker
from test_cli import free_port

from gpu_orchestrator.config import load_settings
from gpu_orchestrator.ops.health import judge
from gpu_orchestrator.ops.page import render_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def test_the_page_escapes_what_it_shows(tmp_path: Path) -> None:
    settings = load_settings(orchestrator_data_dir=tmp_path)
    hostile = worker("<script>alert(1)</script>", ACTIVE)
    page = render_page(judge(replace(snap(hostile)), settings, {}))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'id="breaker-state">closed<' in page


async def _chromium(*args: str, tmp: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM or "chromium",
        *FLAGS,
        f"--user-data-dir={tmp}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


@pytest.mark.process
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
async def test_the_page_in_a_browser_shows_what_status_json_says(dsn: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ORCHESTRATOR_DATA_DIR": str(tmp_path / "orch"),
        "ORCHESTRATOR_PROVIDER": "local",
        "LOCAL_WORKER_COMMAND": "exit 3",  # a broken image: every pod exits before booting
        "ORCHESTRATOR_POLL_SEC": "0.3",
        "MIN_WORKERS_FOR_RATE_CHECK": "3",
        "MAX_ACTIVE_GPUS": "2",
        "POD_GRACE_SEC": "0.5",
        "PORT": str(port),
        "LOG_FORMAT": "json",
    }
    enqueue = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpu_orchestrator", "enqueue", "--count", "3", env=env
    )
    assert await enqueue.wait() == 0
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_orchestrator",
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(300):  # the breaker trips within seconds
                try:
                    status = (await http.get("/status")).json()
                    if status.get("breaker", {}).get("state") == "open":
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.2)
            assert status.get("breaker", {}).get("state") == "open", status
        url = f"http://127.0.0.1:{port}/"
        dom = await _chromium("--dump-dom", url, tmp=tmp_path / "chrome")
        await _chromium(
            f"--screenshot={tmp_path / 'status-page.png'}",
            "--window-size=1000,1000",
            url,
            tmp=tmp_path / "chrome",
        )
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpu_orchestrator",
            "status",
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        doc = json.loads(out)
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 30)

    def shown(element: str) -> str:
        match = re.search(rf'id="{element}">([^<]*)<', dom)
        assert match is not None, (element, dom[:2000])
        return match.group(1)

    assert shown("breaker-state") == doc["breaker"]["state"] == "open"
    assert int(shown("breaker-failed")) == doc["breaker"]["failed"] >= 3
    assert shown("verdict").lower() == doc["verdict"]
    assert dom.count('class="failure"') >= 3  # the failures on the timeline
    assert (tmp_path / "status-page.png").stat().st_size > 10_000
