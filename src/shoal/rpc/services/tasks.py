"""``shoal.v1.Tasks``: the seed's task service, served over a ``TaskAPI``.

A thin adapter: it validates with ``shoal.validation`` (through ``shoal.rpc.convert``), calls the node
through ``TaskAPI`` and turns the answer into messages. A ``ShoalError`` becomes the gRPC status its
class names, with its message; anything else becomes INTERNAL with a generic message, and its traceback
goes to the node's log only. Safe for any number of concurrent calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import grpc.aio

from shoal import validation
from shoal.errors import InvalidInput, ShoalError
from shoal.models import TaskEvent
from shoal.rpc import convert
from shoal.rpc.convert import pb, pb_grpc
from shoal.rpc.services._status import INTERNAL_MESSAGE, Context, abort, answer
from shoal.types import TaskAPI

log = logging.getLogger("shoal.rpc.services.tasks")

#: Full name of the service, for health and reflection.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Tasks"].full_name


class TasksServicer(pb_grpc.TasksServicer):
    """Serves ``shoal.v1.Tasks`` over ``tasks``. ``close()`` ends open WatchTasks streams cleanly."""

    def __init__(self, tasks: TaskAPI) -> None:
        self._tasks = tasks
        # a future, not an Event: a stream waits on it beside its next event without a task of its own
        self._closing: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.watchers = 0

    async def GetTask(self, request: pb.ID, context: Context) -> pb.Task:
        async def call() -> pb.Task:
            task_id = convert.one_id(request)
            wait = convert.wait_from_proto(request)
            task = await (self._tasks.wait(task_id, wait) if wait else self._tasks.get(task_id))
            return convert.task_to_proto(task)

        return await answer(context, "GetTask", call)

    async def ListTask(self, request: pb.Query, context: Context) -> pb.TaskPage:
        async def call() -> pb.TaskPage:
            state, limit, cursor = convert.query_from_proto(request)
            return convert.page_to_proto(await self._tasks.list(state, limit, cursor))

        return await answer(context, "ListTask", call)

    async def CreateTask(self, request: pb.TaskSpec, context: Context) -> pb.Task:
        async def call() -> pb.Task:
            spec = convert.spec_from_proto(request)
            return convert.task_to_proto(await self._tasks.submit(spec))

        return await answer(context, "CreateTask", call)

    async def DelTask(self, request: pb.ID, context: Context) -> pb.OptResult:
        async def call() -> pb.OptResult:
            ids = _bulk_ids(request)
            return pb.OptResult(succeed=await self._tasks.delete_many(ids))

        return await answer(context, "DelTask", call)

    async def KillTask(self, request: pb.ID, context: Context) -> pb.OptResult:
        async def call() -> pb.OptResult:
            ids = _bulk_ids(request)
            return pb.OptResult(succeed=await self._tasks.kill_many(ids))

        return await answer(context, "KillTask", call)

    async def GetTaskResult(self, request: pb.ID, context: Context) -> pb.TaskResult:
        async def call() -> pb.TaskResult:
            task_id = convert.one_id(request)
            wait = convert.wait_from_proto(request)
            if wait:
                await self._tasks.wait(task_id, wait)
            return convert.result_to_proto(await self._tasks.result(task_id))

        return await answer(context, "GetTaskResult", call)

    async def WatchTasks(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.TaskEvent]:
        try:
            wanted = convert.watch_ids(request)
        except ShoalError as err:
            await abort(context, err)
        self.watchers += 1
        try:
            async with contextlib.aclosing(self._until_closing(self._tasks.watch())) as events:
                async for event in events:
                    if not wanted or event.id in wanted:
                        yield convert.event_to_proto(event)
        except ShoalError as err:
            await abort(context, err)
        except Exception:
            log.exception("WatchTasks failed")
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        finally:
            self.watchers -= 1

    async def _until_closing(self, events: AsyncIterator[TaskEvent]) -> AsyncGenerator[TaskEvent, None]:
        """The events until ``close()`` is called; always closes the source iterator, and awaits the task
        that reads it."""
        following: asyncio.Future[TaskEvent] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait({following, self._closing}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    return
                try:
                    event = following.result()
                except StopAsyncIteration:
                    return
                following = None
                yield event
        finally:
            if following is not None and not following.done():
                # The source is suspended inside this pending step: end it before closing the source.
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def close(self) -> None:
        """End every WatchTasks stream with OK, so clients see a clean end at shutdown."""
        if not self._closing.done():
            self._closing.set_result(None)

    def __repr__(self) -> str:
        return f"TasksServicer(watchers={self.watchers}, closing={self._closing.done()})"


def _bulk_ids(request: pb.ID) -> list[str]:
    if request.HasField("wait_s"):
        raise InvalidInput("wait_s applies to GetTask and GetTaskResult only")
    return validation.task_ids(list(request.id))
