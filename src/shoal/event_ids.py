"""Task event ids: an event's place in the cluster's event stream, which a watch resumes after.

``"<entry id>/<index>"``: the stream entry (``"<ms>-<seq>"``, the store's) that one script call added, and
the event's index in that entry's events (shoal.store.task_events). Ids order events as they happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.errors import InvalidInput

#: Longest event id read from a client.
MAX_EVENT_ID = 64

#: An event id as a pattern (OpenAPI, and the check here).
EVENT_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}/[0-9]{1,9}$"

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,9})")


@dataclass(frozen=True, order=True, slots=True)
class EventId:
    """One event's place: its entry's id (milliseconds, sequence) and its index in the entry."""

    ms: int
    seq: int
    index: int

    @property
    def entry(self) -> str:
        return f"{self.ms}-{self.seq}"

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}/{self.index}"


def parse_event_id(text: str) -> EventId:
    """An event id as a client sends it back (SSE ``Last-Event-ID``, ``?since=``, gRPC ``since``); a malformed
    one raises InvalidInput."""
    found = _ID.fullmatch(text.strip()) if len(text) <= MAX_EVENT_ID else None
    if found is None:
        raise InvalidInput(f"bad event id {text[:MAX_EVENT_ID]!r}: expected '<ms>-<seq>/<index>', an event's id")
    return EventId(int(found[1]), int(found[2]), int(found[3]))


def after_entry(entry: str) -> EventId:
    """A place after every event of the entry ``entry``: where a reader that has passed it goes on."""
    ms, _, seq = entry.partition("-")
    return EventId(int(ms), int(seq or 0), 1 << 30)
