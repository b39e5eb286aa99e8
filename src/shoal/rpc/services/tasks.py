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
from shoal.errors import InvalidInput, ShoalError, StoreError, StoreFault
from shoal.models import EventGap, Task, TaskEvent, TaskSpec
from shoal.rpc import convert
from shoal.rpc.convert import pb, pb_grpc
from shoal.rpc.services._status import INTERNAL_MESSAGE, Context, abort, answer
from shoal.types import TaskAPI
from shoal.validation import MAX_BATCH, RefusedTask

log = logging.getLogger("shoal.rpc.services.tasks")

#: Specs a SubmitTasks call reads ahead of the store: the client is held back (flow control) beyond it.
READ_AHEAD = 2 * MAX_BATCH


#: Initial metadata of a WatchTasks response that resumed past what the store keeps: the oldest event id held.
GAP_METADATA = "shoal-events-gap"

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
            if not wait:
                return convert.task_to_proto(await self._tasks.get(task_id))
            return convert.task_to_proto(*await self._tasks.wait_result(task_id, wait))

        return await answer(context, "GetTask", call)

    async def ListTask(self, request: pb.Query, context: Context) -> pb.TaskPage:
        async def call() -> pb.TaskPage:
            state, limit, cursor = convert.query_from_proto(request)
            return convert.page_to_proto(await self._tasks.list(state, limit, cursor))

        return await answer(context, "ListTask", call)

    async def CreateTask(self, request: pb.TaskSpec, context: Context) -> pb.Task:
        async def call() -> pb.Task:
            spec = convert.spec_from_proto(request)
            wait = convert.spec_wait(request)
            if not wait:
                return convert.task_to_proto((await self._tasks.submit(spec))[0])
            task, _stored, found = await self._tasks.submit_and_wait(spec, wait)
            return convert.task_to_proto(task, found)

        return await answer(context, "CreateTask", call)

    async def CreateTasks(self, request: pb.CreateTasksRequest, context: Context) -> pb.CreateTasksResponse:
        async def call() -> pb.CreateTasksResponse:
            specs = convert.specs_from_proto(request.tasks)
            created = await self._tasks.submit_many(specs)
            return pb.CreateTasksResponse(tasks=[convert.task_to_proto(t) for t in created])

        return await answer(context, "CreateTasks", call)

    async def SubmitTasks(
        self, request_iterator: AsyncIterator[pb.TaskSpec], context: Context
    ) -> AsyncIterator[pb.Task]:
        """Store specs as they arrive, as many per store call as have arrived (at most MAX_BATCH), and send
        back each stored task in order. A refused spec ends the call once every spec before it is stored."""
        arrived: asyncio.Queue[_Arrival] = asyncio.Queue(READ_AHEAD)
        reader = asyncio.create_task(_pump(request_iterator, arrived))
        sent = 0
        try:
            then: bool | Exception = False
            while then is False:
                chunk, then = await _next_chunk(arrived)
                stored, refusal = await self._store_prefix(chunk, sent)
                for task in stored:
                    yield convert.task_to_proto(task)
                sent += len(stored)
                if refusal is not None:
                    raise refusal
            if isinstance(then, Exception):
                raise then
        except StoreError as err:  # as ``answer`` treats it, saying how far the stream had come
            if isinstance(err, StoreFault):
                log.error("SubmitTasks after %d task(s): %s", sent, err, exc_info=err)
            else:
                log.warning("SubmitTasks after %d task(s): %s", sent, err)
            await abort(context, err)
        except ShoalError as err:
            await abort(context, err)
        except Exception:
            log.exception("SubmitTasks failed after %d task(s)", sent)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _store_prefix(self, chunk: list[pb.TaskSpec], first: int) -> tuple[list[Task], RefusedTask | None]:
        """Store ``chunk`` (whose first spec is the stream's ``first``) in one store call; when a spec of it
        is refused, store the specs before it instead and return the refusal, its index counted from the
        stream's first spec."""
        specs: list[TaskSpec] = []
        refusal: RefusedTask | None = None
        for msg in chunk:
            try:
                specs.append(convert.batch_spec_from_proto(msg))
            except InvalidInput as exc:
                refusal = RefusedTask(first + len(specs), exc)
                break
        while specs:
            try:
                return await self._tasks.submit_many(specs), refusal
            except RefusedTask as exc:  # the type check or the type's own: store what came before it
                specs, refusal = specs[: exc.index], exc.moved(first)
        return [], refusal

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
        """Live task events; with ``since``, first those after it (see ``TaskAPI.watch``). A resume past what the
        store keeps is told in the initial metadata, "shoal-events-gap": the oldest event id held."""
        try:
            wanted = convert.watch_ids(request)
            since = convert.watch_since(request)
        except ShoalError as err:
            await abort(context, err)
        self.watchers += 1
        try:
            async with contextlib.aclosing(self._until_closing(self._tasks.watch(since))) as events:
                async for event in events:
                    if isinstance(event, EventGap):
                        await context.send_initial_metadata(((GAP_METADATA, event.oldest or ""),))
                    elif not wanted or event.id in wanted:
                        yield convert.event_to_proto(event)
        except ShoalError as err:
            await abort(context, err)
        except Exception:
            log.exception("WatchTasks failed")
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        finally:
            self.watchers -= 1

    async def _until_closing(
        self, events: AsyncIterator[TaskEvent | EventGap]
    ) -> AsyncGenerator[TaskEvent | EventGap, None]:
        """The events until ``close()`` is called; always closes the source iterator, and awaits the task
        that reads it."""
        following: asyncio.Future[TaskEvent | EventGap] | None = None
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


#: What SubmitTasks' reader hands on: a spec, None at the stream's end, or the error that broke the stream.
_Arrival = pb.TaskSpec | Exception | None


async def _pump(source: AsyncIterator[pb.TaskSpec], into: asyncio.Queue[_Arrival]) -> None:
    """Move a stream's specs into ``into``, then None for its end (or the error that broke it)."""
    try:
        async for msg in source:
            await into.put(msg)
    except Exception as exc:
        await into.put(exc)
        return
    await into.put(None)


async def _next_chunk(arrived: asyncio.Queue[_Arrival]) -> tuple[list[pb.TaskSpec], bool | Exception]:
    """The specs that have arrived (waiting for one if none has), at most MAX_BATCH, and what follows them:
    False (more may come), True (the stream ended) or the error that broke it."""
    chunk: list[pb.TaskSpec] = []
    msg = await arrived.get()
    while isinstance(msg, pb.TaskSpec):
        chunk.append(msg)
        if len(chunk) >= MAX_BATCH or arrived.empty():
            return chunk, False
        msg = arrived.get_nowait()
    return chunk, True if msg is None else msg


def _bulk_ids(request: pb.ID) -> list[str]:
    if request.HasField("wait_s"):
        raise InvalidInput("wait_s applies to GetTask and GetTaskResult only")
    return validation.task_ids(list(request.id))
