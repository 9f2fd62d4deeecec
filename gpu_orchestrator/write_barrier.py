"""Gathers the writes of a cycle's concurrent actions into one store call.

Each action runs as its own task: write, touch the pod, write. Sent one by one, N
actions cost N round trips per step. Here an action's writes wait until every
member still under way is waiting for its writes too (or has finished); then all
of them go as one `apply_writes` (one round trip, one transaction). A step costs
one round trip however many actions take it.

A write waits for the others at most `linger` seconds: a slow provider call of
one action must not hold back the writes of those whose calls already answered
(under a cycle deadline they would be lost with it). Writes that arrive together
still go together. A member must never wait for another member while it waits
here (e.g. hold a semaphore they need): only the linger would move things on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from .errors import StoreError
from .store.base import Fence, OrchestratorStore
from .store.writes import GroupAnswer, Write

LINGER_SEC = 0.05  # far below a provider call, far above the gap between ready tasks


class WriteBarrier:
    def __init__(
        self,
        store: OrchestratorStore,
        fence: Fence | None,
        members: int,
        linger: float = LINGER_SEC,
    ) -> None:
        self._store = store
        self._fence = fence
        self._running = members  # members neither waiting here nor finished
        self._linger = linger
        self._waiting: list[tuple[Sequence[Write], asyncio.Future[GroupAnswer]]] = []

    async def write(self, *group: Write) -> GroupAnswer:
        """Sends `group` with the other members' writes; raises what the call raised
        (`LeaseLost`: none of the batch applied)."""
        future: asyncio.Future[GroupAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((group, future))
        try:
            await self._arrive()
            if not future.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), self._linger)
            if not future.done():  # the others are slow: go with whoever is waiting
                await self._send()
            return await future
        except asyncio.CancelledError:
            future.cancel()  # so that no batch sends it now
            raise

    async def leave(self) -> None:
        """This member writes nothing more."""
        await self._arrive()

    async def _arrive(self) -> None:
        self._running -= 1
        if self._running == 0:
            await self._send()

    async def _send(self) -> None:
        # A member cancelled while it waited (the cycle timed out) sends nothing.
        batch = [(group, future) for group, future in self._waiting if not future.done()]
        self._waiting = []
        if not batch:
            return
        self._running += len(batch)
        try:
            answers = await self._store.apply_writes([g for g, _ in batch], fence=self._fence)
            if len(answers) != len(batch):
                raise StoreError(f"apply_writes: {len(answers)} answers to {len(batch)} groups")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: so are the waiters
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
