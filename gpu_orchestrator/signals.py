"""Graceful stop: the first SIGTERM/SIGINT sets an event (finish what is under way,
start nothing new); the second exits at once."""

from __future__ import annotations

import asyncio
import os
import signal

import structlog

log = structlog.get_logger()


def stop_on_signals() -> asyncio.Event:
    """Installs the handlers on the running loop and returns the stop event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second_signal_exit_now", signal=sig.name)
            os._exit(128 + sig.value)
        log.info("stop_requested", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return stop
