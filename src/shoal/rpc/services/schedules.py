"""``shoal.v1.Schedules``: named schedules over gRPC, served over the node's ``ScheduleService``.

A thin adapter like ``services/tasks.py``: the spec becomes the body REST reads (``schedule_convert``), so
the checks and their words are REST's; a ``ShoalError`` becomes its status (InvalidInput ->
INVALID_ARGUMENT, ScheduleNotFound -> NOT_FOUND, ScheduleExists -> ALREADY_EXISTS).
"""

from __future__ import annotations

from shoal.rpc import schedule_convert
from shoal.rpc.convert import sched_grpc, sched_pb
from shoal.rpc.services._status import Context, answer
from shoal.schedules import ScheduleService

#: Full name of the service, for health and reflection.
SERVICE_NAME: str = sched_pb.DESCRIPTOR.services_by_name["Schedules"].full_name


class SchedulesServicer(sched_grpc.SchedulesServicer):
    """Serves ``shoal.v1.Schedules`` over ``schedules``."""

    def __init__(self, schedules: ScheduleService) -> None:
        self._schedules = schedules

    async def AddSchedule(self, request: sched_pb.ScheduleSpec, context: Context) -> sched_pb.Schedule:
        async def call() -> sched_pb.Schedule:
            added = await self._schedules.add(schedule_convert.spec_body(request))
            return schedule_convert.schedule_to_proto(added)

        return await answer(context, "AddSchedule", call)

    async def ListSchedules(self, request: sched_pb.ListSchedulesRequest, context: Context) -> sched_pb.ScheduleList:
        async def call() -> sched_pb.ScheduleList:
            found = await self._schedules.list()
            return sched_pb.ScheduleList(schedules=[schedule_convert.schedule_to_proto(s) for s in found])

        return await answer(context, "ListSchedules", call)

    async def GetSchedule(self, request: sched_pb.ScheduleName, context: Context) -> sched_pb.Schedule:
        async def call() -> sched_pb.Schedule:
            return schedule_convert.schedule_to_proto(await self._schedules.get(request.name))

        return await answer(context, "GetSchedule", call)

    async def DeleteSchedule(self, request: sched_pb.ScheduleName, context: Context) -> sched_pb.DeleteScheduleResponse:
        async def call() -> sched_pb.DeleteScheduleResponse:
            await self._schedules.delete(request.name)
            return sched_pb.DeleteScheduleResponse()

        return await answer(context, "DeleteSchedule", call)

    async def PauseSchedule(self, request: sched_pb.ScheduleName, context: Context) -> sched_pb.Schedule:
        async def call() -> sched_pb.Schedule:
            return schedule_convert.schedule_to_proto(await self._schedules.pause(request.name))

        return await answer(context, "PauseSchedule", call)

    async def ResumeSchedule(self, request: sched_pb.ScheduleName, context: Context) -> sched_pb.Schedule:
        async def call() -> sched_pb.Schedule:
            return schedule_convert.schedule_to_proto(await self._schedules.resume(request.name))

        return await answer(context, "ResumeSchedule", call)
