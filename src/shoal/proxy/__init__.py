"""The HTTP side of the cluster cache: a shared HTTP cache (RFC 9111 essentials) over ``CacheAPI``, used by
the ``fetch`` task type and by the caching forward proxy every node serves.

- ``policy``: what may be stored, for how long, and what a request asks of the cache (pure functions).
- ``entry``: a stored response and its encoding as a cache value.
- ``httpcache``: ``HttpCache``, the lookup / fill / revalidate flow over the cluster cache.
- ``upstream``: requests to origins, each address checked (and pinned) as ``fetch`` does.
- ``server`` and ``tunnel``: the proxy itself (HTTP/1.1 with h11 on asyncio streams) and CONNECT.
"""
