"""shoal: a self-healing task cluster.

The public surface for users: the REST client (sync and async), the models it returns, the errors it
raises, and ``task_type`` to write task types of your own.
"""

from shoal.client import AsyncClient, Client
from shoal.errors import (
    IllegalTransition,
    InvalidInput,
    NotFound,
    ResultNotFound,
    ShoalError,
    TaskNotFound,
    Unauthorized,
    UnknownTaskType,
)
from shoal.models import Task, TaskResult, TaskState
from shoal.version import __version__
from shoal.worker.child import TaskCancelled
from shoal.worker.handlers import Output, TaskContext, task_type

__all__ = [
    "AsyncClient",
    "Client",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "Output",
    "ResultNotFound",
    "ShoalError",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskNotFound",
    "TaskResult",
    "TaskState",
    "Unauthorized",
    "UnknownTaskType",
    "__version__",
    "task_type",
]
