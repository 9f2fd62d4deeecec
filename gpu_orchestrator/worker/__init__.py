"""The reference worker agent that runs inside each pod (`gpu-orchestrator worker`)."""

from .agent import WorkerAgent, install_signal_handlers, run_worker
from .handlers import DemoHandler, ShellHandler, Task, TaskFailed, TaskHandler

__all__ = [
    "DemoHandler",
    "ShellHandler",
    "Task",
    "TaskFailed",
    "TaskHandler",
    "WorkerAgent",
    "install_signal_handlers",
    "run_worker",
]
