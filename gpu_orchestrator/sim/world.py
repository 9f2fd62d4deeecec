"""The simulated world between two cycles: tasks arrive (and users give up on
them), pods boot, agents claim, run and finish tasks, crash, hang and heartbeat;
and what a cycle observes of it (`snapshot`).

Time is the event clock only: nothing reads the wall clock, and every random
draw comes from the one seeded `random.Random`.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from ..models import BreakerRecord, Pod, PolicyConfig, QueueStats, Snapshot, WorkerStatus
from .provider import Platform, SimProvider
from .queue import SimTask, TaskQueue, TaskStatus
from .rows import WorkerRow
from .workers import Agent, WorkerTraits


class _Kind(Enum):
    ARRIVAL = 0  # a task is enqueued
    BOOT = 1  # a pod's agent sends its first heartbeat
    FINISH = 2  # an agent ends the task it runs


@dataclass(frozen=True, order=True)
class _Event:
    at: datetime
    seq: int  # ties broken in scheduling order: deterministic
    kind: _Kind
    key: str  # task id (ARRIVAL, FINISH) or worker id (BOOT)
    run: int = 0  # FINISH: which claim of the task it ends


class World:
    def __init__(
        self,
        cfg: PolicyConfig,
        platform: Platform,
        traits: WorkerTraits,
        start: datetime,
        until: datetime,
        rng: random.Random,
        *,
        counts_attempts: bool,
        poison_kills_after_sec: float,
        cancel_after_sec: float | None,
    ) -> None:
        self.cfg = cfg
        self.until = until
        self.rng = rng
        self.provider = SimProvider(platform, start, rng)
        self.queue = TaskQueue(cfg.max_task_attempts, counts_attempts=counts_attempts)
        self.rows: dict[str, WorkerRow] = {}
        self.agents: dict[str, Agent] = {}  # agents whose pod runs
        self.breaker: BreakerRecord | None = None  # the last recorded transition
        self.launches: list[datetime] = []  # when each spawn action ran
        self._traits = traits
        self._poison_kills_after = timedelta(seconds=poison_kills_after_sec)
        self._cancel_after = (
            None if cancel_after_sec is None else timedelta(seconds=cancel_after_sec)
        )
        self._arriving: dict[str, SimTask] = {}
        self._events: list[_Event] = []
        self._seq = 0

    def _schedule(self, at: datetime, kind: _Kind, key: str, run: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._events, _Event(at, self._seq, kind, key, run))

    def enqueue_later(self, task: SimTask) -> None:
        self._arriving[task.id] = task
        self._schedule(task.created_at, _Kind.ARRIVAL, task.id)

    def pod_created(self, worker_id: str, boots_at: datetime | None) -> None:
        if boots_at is not None:
            self._schedule(boots_at, _Kind.BOOT, worker_id)

    def advance(self, now: datetime) -> None:
        """Plays every event up to `now`."""
        while self._events and self._events[0].at <= now:
            event = heapq.heappop(self._events)
            if event.kind is _Kind.ARRIVAL:
                self.queue.add(self._arriving.pop(event.key))
            elif event.kind is _Kind.BOOT:
                self.boot(event.key, event.at)
            else:
                self._finish(event.key, event.run, event.at)
            self.dispatch(event.at)
        if self._cancel_after is not None:
            self.queue.cancel_waiting(now - self._cancel_after, now)

    def boot(self, worker_id: str, at: datetime) -> None:
        """The pod's agent sends its first heartbeat at `at`."""
        row = self.rows.get(worker_id)
        pod = self.provider.pods[worker_id]
        # A pod whose row is already draining, failed or gone is told to stop by
        # its first heartbeat's answer (`should_drain`): it takes no task.
        if pod.ended_at is not None or row is None or row.status is not WorkerStatus.SPAWNING:
            return
        row.first_heartbeat(at)
        self.agents[worker_id] = Agent.boot(worker_id, at, self._traits, self.until, self.rng)

    def _finish(self, task_id: str, run: int, at: datetime) -> None:
        task = self.queue.tasks[task_id]
        if task.run != run or task.status is not TaskStatus.IN_PROGRESS:
            return  # released meanwhile: this claim is over
        assert task.worker_id is not None
        agent = self.agents.get(task.worker_id)
        if agent is None or not agent.alive(at):
            return  # its pod is gone, or it crashed: the orchestrator will notice
        self.queue.complete(task, at)
        row = self.rows[task.worker_id]
        row.tasks_completed += 1
        row.last_task_finished_at = at
        agent.task_id = None

    def dispatch(self, now: datetime) -> None:
        """Idle agents claim tasks (their poll is far below a cycle: at once)."""
        for agent in self.agents.values():
            if not agent.idle(now) or not self.rows[agent.worker_id].claims():
                continue
            task = self.queue.claim(agent.worker_id, now)
            if task is None:
                return
            agent.task_id = task.id
            if task.poison:
                agent.died_at = now + self._poison_kills_after
            elif self.rng.random() < self._traits.hang_p:
                agent.hung = True
            else:
                self._schedule(
                    now + timedelta(seconds=task.duration_sec), _Kind.FINISH, task.id, task.run
                )

    def terminate_pod(self, worker_id: str, now: datetime) -> bool:
        """False: the provider call failed, the pod (if any) runs on."""
        if not self.provider.terminate(worker_id, now):
            return False
        self.agents.pop(worker_id, None)
        return True

    def snapshot(self, now: datetime, pods: tuple[Pod, ...] | None) -> Snapshot:
        for agent in self.agents.values():
            self.rows[agent.worker_id].last_heartbeat = agent.last_heartbeat(now)
        since = now - timedelta(seconds=self.cfg.horizon_sec)
        workers = tuple(v for row in self.rows.values() if (v := row.view()) is not None)
        launches = tuple(la for row in self.rows.values() if (la := row.launch(since)) is not None)
        return Snapshot(
            now=now,
            workers=workers,
            holds=self.queue.holds(),
            queue=QueueStats(self.queue.queued(), self.queue.oldest_queued_at()),
            launches=launches,
            breaker=self.breaker,
            pods=pods,
        )
