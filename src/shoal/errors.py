"""Every error shoal raises on purpose, in one tree.

    ShoalError
    ├── InvalidInput            bad input from a user: 400 / INVALID_ARGUMENT
    │   ├── UnknownTaskType     no live node runs this type
    │   └── ValueTooLarge       a cache value above cache_max_value: 413 / RESOURCE_EXHAUSTED
    ├── Unauthorized            missing or wrong token: 401 / UNAUTHENTICATED
    ├── NotFound                404 / NOT_FOUND
    │   ├── TaskNotFound
    │   ├── ResultNotFound
    │   ├── ScheduleNotFound
    │   ├── WebhookNotFound
    │   └── DeliveryNotFound
    ├── IllegalTransition       the task's state forbids the change: 409 / FAILED_PRECONDITION
    ├── ScheduleExists          a schedule of that name exists already: 409 / ALREADY_EXISTS
    ├── StaleEpoch              a master write under an epoch that is no longer current
    ├── StoreError              the store failed a call; ``detail`` has its own words, for the log
    │   ├── StoreUnavailable    cannot be reached, timed out, still loading, refusing writes for now:
    │   │                       503 / UNAVAILABLE; trying again later may work
    │   └── StoreFault          refused a call for a reason waiting will not fix: 500 / INTERNAL
    ├── NoLiveNode              no live node can serve the call (none beats, none runs tasks, no owner
    │                           of a cache key answers): 503 / UNAVAILABLE
    └── EmbeddedRedisError      the embedded redis-server could not be found or started

The HTTP and gRPC status of each class is kept beside it (``http_status``, ``grpc_code``) so that the
web and rpc adapters share one table. This module imports nothing from shoal. Only ``shoal.store`` turns
redis-py's exceptions into the store errors (``shoal.store.client``).
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidInput(ShoalError):
    """Raised when a request is malformed: a missing field, a bad URL, a body over a limit."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class UnknownTaskType(InvalidInput):
    """Raised at submit when no live node has registered the task's type."""

    def __init__(self, task_type: str, known: list[str]) -> None:
        known_text = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown task type {task_type!r}; registered types: {known_text}")
        self.task_type = task_type
        self.known = known


class ValueTooLarge(InvalidInput):
    """Raised when a cache value is bigger than the node's ``cache_max_value`` (or than its whole shard)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"cache value of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class Unauthorized(ShoalError):
    """Raised when a call carries no token or a wrong one."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class NotFound(ShoalError):
    """Raised when a thing asked for does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class TaskNotFound(NotFound):
    """Raised when no task has the given id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class ResultNotFound(NotFound):
    """Raised when a task exists but has no result yet."""

    def __init__(self, task_id: str, state: str) -> None:
        super().__init__(f"task {task_id!r} has no result (state {state})")
        self.task_id = task_id
        self.state = state


class WorkflowNotFound(NotFound):
    """Raised when the store keeps no task of the workflow asked for."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}")
        self.workflow_id = workflow_id


class ScheduleNotFound(NotFound):
    """Raised when no schedule has the given name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name


class WebhookNotFound(NotFound):
    """Raised when no webhook subscription has the given id."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"no webhook with id {webhook_id!r}")
        self.webhook_id = webhook_id


class DeliveryNotFound(NotFound):
    """Raised when a webhook has no delivery of the given id (never made, or dropped from its log)."""

    def __init__(self, webhook_id: str, delivery_id: str) -> None:
        super().__init__(f"webhook {webhook_id!r} has no delivery {delivery_id!r}")
        self.webhook_id = webhook_id
        self.delivery_id = delivery_id


class ScheduleExists(ShoalError):
    """Raised when a schedule is added under a name another schedule holds (delete that one first)."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(f"a schedule named {name!r} exists already")
        self.name = name


class IllegalTransition(ShoalError):
    """Raised when a task's current state does not allow the requested change."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, task_id: str, current: str, wanted: str) -> None:
        super().__init__(f"task {task_id!r} is {current}; it cannot become {wanted}")
        self.task_id = task_id
        self.current = current
        self.wanted = wanted


class StaleEpoch(ShoalError):
    """Raised when a master write carries an epoch that another master has replaced."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, held: int, current: int) -> None:
        super().__init__(f"epoch {held} is stale; the cluster is at epoch {current}")
        self.held = held
        self.current = current


class StoreError(ShoalError):
    """Raised when the store fails a call. ``message`` is for users and names nothing of the store's
    internals; ``detail`` is what the store (or redis-py) said, for the node's log, and ``str()`` has both."""

    #: What users are told when no other message is given.
    MESSAGE = "the store failed a call"
    #: The store's own words; empty when there are none (e.g. an error rebuilt by the client).
    detail = ""

    def __init__(self, message: str = "", *, detail: str = "") -> None:
        super().__init__(message or self.MESSAGE)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message


class StoreUnavailable(StoreError):
    """Raised when the store cannot serve for now: it cannot be reached, a call timed out, it is still
    loading its data, or it refuses writes for now (a replica, a master short of replicas). Shoal's loops
    retry on it; the API answers 503."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    MESSAGE = "the store (Redis) cannot be reached right now; try again shortly"


class StoreFault(StoreError):
    """Raised when the store refuses a call for a reason waiting will not fix (a command its ACL forbids,
    a key of the wrong type, a script error): a fault to look into, so the API answers 500."""

    MESSAGE = "the store refused a call; the node's log says why"


class NoLiveNode(ShoalError):
    """Raised when no live node can serve the call: at submit, no node has beaten lately (e.g. a store that
    refuses writes refuses the heartbeats too) or none of those that beat runs tasks; in the cluster cache, no
    node that holds the key answered. Unlike an unknown type or a store that is down, the cluster is unwell,
    and trying again later may work.

    ``detail`` says what no live node did, after "no live node" (e.g. "runs tasks: ..."); without it, the
    message says that no node has beaten lately."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    #: What the message says without a ``detail``.
    NO_HEARTBEAT = "in the cluster: no node has sent a heartbeat lately"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"no live node {detail or self.NO_HEARTBEAT}; try again shortly")
        self.detail = detail


class EmbeddedRedisError(ShoalError):
    """Raised when the embedded redis-server cannot be found or started."""
