"""shoal: a self-healing task cluster.

The public surface for users: the REST client (sync and async), the models it returns, the errors it
raises, ``task`` to make a plain Python function a task type (``chain``, ``group`` and ``Workflow`` to run
such tasks after one another), and ``task_type`` to write task types of your own.
"""

from shoal.canvas import Workflow, WorkflowRun, chain, group
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
from shoal.functions import AsyncTaskHandle, TaskCall, TaskFunction, TaskHandle, task
from shoal.models import Task, TaskResult, TaskState
from shoal.version import __version__
from shoal.worker.child import TaskCancelled
from shoal.worker.handlers import Output, TaskContext, current_task, task_type

__all__ = [
    "AsyncClient",
    "AsyncTaskHandle",
    "Client",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "Output",
    "ResultNotFound",
    "ShoalError",
    "Task",
    "TaskCall",
    "TaskCancelled",
    "TaskContext",
    "TaskFunction",
    "TaskHandle",
    "TaskNotFound",
    "TaskResult",
    "TaskState",
    "Unauthorized",
    "UnknownTaskType",
    "Workflow",
    "WorkflowRun",
    "__version__",
    "chain",
    "current_task",
    "group",
    "task",
    "task_type",
]
