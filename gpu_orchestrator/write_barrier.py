"""Gathers the writes of a cycle's concurrent actions into one store call.

Each action runs as its own task: write, touch the pod, write. Sent one by one, N
actions cost N round trips per step. Here an action's writes wait until every
member still under way is waiting for its writes too (or has finished); then all
of them go as one `apply_writes` (one round trip, one transaction). A step costs
one round trip however many actions take it. A member must never wait for another
member while it waits here (e.g. hold a semaphore they need): nothing would move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .errors import StoreError
from .store.base import Fence, OrchestratorStore
from .store.writes import GroupAnswer, Write


class WriteBarrier:
    def __init__(self, store: OrchestratorStore, fence: Fence | None, members: int) -> None:
        self._store = store
        self._fence = fence
        self._running = members  # members neither waiting here nor finished
        self._waiting: list[tuple[Sequence[Write], asyncio.Future[GroupAnswer]]] = []

    async def write(self, *group: Write) -> GroupAnswer:
        """Sends `group` with the other members' writes; raises what the call raised
        (`LeaseLost`: none of the batch applied)."""
        future: asyncio.Future[GroupAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((group, future))
        await self._arrive()
        return await future

    async def leave(self) -> None:
        """This member writes nothing more."""
        await self._arrive()

    async def _arrive(self) -> None:
        self._running -= 1
        # A member cancelled while it waited (the cycle timed out) sends nothing.
        batch = [(group, future) for group, future in self._waiting if not future.done()]
        if self._running > 0 or not batch:
            return
        self._waiting = []
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
