"""shoal's Python client over the REST API: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    >>> from shoal.client import Client
    >>> with Client() as shoal:                     # SHOAL_API / SHOAL_TOKEN / ./.shoal/token
    ...     task = shoal.submit("fetch", "http://127.0.0.1:8000/", wait=30)
    ...     print(task.state.name, shoal.result(task.id).code[:80])

Calls return ``shoal.models`` dataclasses and raise ``shoal.errors`` classes (``TaskNotFound``,
``InvalidInput``, ...) rebuilt from the server's error body, or this package's ``ApiUnreachable``,
``ApiError`` and ``WaitTimeout``. This package imports nothing of shoal's server side.
"""

from shoal.client._sse import Gap, Lagged, StreamItem
from shoal.client.aio import AsyncClient
from shoal.client.errors import ApiError, ApiUnreachable, TaskFailed, WaitTimeout
from shoal.client.sync import Client

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "AsyncClient",
    "Client",
    "Gap",
    "Lagged",
    "StreamItem",
    "TaskFailed",
    "WaitTimeout",
]
