"""A stranger's HTTP body decoded as its ``Content-Encoding`` says, within a limit, a bounded step at a time.

A few hundred bytes of gzip expand to tens of MiB, and a few KB of gzip-of-gzip to GiB, so a body is never
decoded in one call: each call to zlib gets at most ``FEED`` bytes and may produce at most ``STEP``, the
limit is applied to the decoded bytes as they come (and to the bytes as sent), and at most ``MAX_CODINGS``
stacked codings are decoded. Beside the caller's own buffer, decoding holds one step per coding at a time.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

#: Most codings one response may stack ("gzip, gzip" is two); more is refused, not decoded.
MAX_CODINGS = 2
#: Most decoded bytes one decompress call may produce.
STEP = 64 * 1024
#: Most encoded bytes handed to one decompress call (zlib copies what it leaves over on every call).
FEED = 4 * 1024
#: The codings decoded here, as an ``Accept-Encoding`` value.
ACCEPT_ENCODING = "gzip, deflate"
#: zlib's window bits for each coding: gzip's header and trailer, or zlib's (deflate; raw deflate is tried next).
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class BodyRefused(Exception):
    """A body that cannot be read within the limits: too large, stacked or unknown codings, or corrupt data."""


def codings(content_encoding: Iterable[str]) -> list[str]:
    """The codings of a response, in the order they were applied, from its ``Content-Encoding`` values
    (``identity`` dropped); refused when there are more than ``MAX_CODINGS`` or one is not decoded here."""
    found = [c.strip().lower() for value in content_encoding for c in value.split(",")]
    found = [c for c in found if c and c != "identity"]
    if len(found) > MAX_CODINGS:
        raise BodyRefused(f"Content-Encoding stacks {len(found)} codings; at most {MAX_CODINGS} are decoded")
    for coding in found:
        if coding not in _WBITS:
            raise BodyRefused(f"Content-Encoding {coding[:40]!r} is not supported (only gzip and deflate)")
    return found


async def decoded(chunks: AsyncIterable[bytes], content_encoding: Iterable[str], limit: int) -> AsyncIterator[bytes]:
    """The body in ``chunks`` decoded, in pieces; ``BodyRefused`` as soon as the bytes sent or the decoded
    bytes pass ``limit``, before any piece over it is produced."""
    applied = codings(content_encoding)
    decoders = [_Inflater(coding) for coding in reversed(applied)]
    what = f" (decoded from {', '.join(applied)})" if applied else ""
    sent = size = 0
    async for chunk in chunks:
        sent += len(chunk)
        if sent > limit:
            raise BodyRefused(f"body is over the limit of {limit} bytes as sent")
        for piece in _through(decoders, chunk):
            size += len(piece)
            if size > limit:
                raise BodyRefused(f"body is over the limit of {limit} bytes{what}")
            yield piece


def _through(decoders: list[_Inflater], data: bytes) -> Iterator[bytes]:
    """``data`` through every decoder in turn, lazily: one piece per decoder is alive at a time."""
    if not decoders:
        if data:
            yield data
        return
    for piece in decoders[0].feed(data):
        yield from _through(decoders[1:], piece)


class _Inflater:
    """One gzip or deflate coding, decoded incrementally in steps of at most ``STEP`` bytes."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.zlib = zlib.decompressobj(_WBITS[coding])
        self.started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), FEED):
            pending: bytes | memoryview = view[start : start + FEED]
            while not self.zlib.eof:  # what follows the end of the stream is ignored, as browsers do
                out = self._step(pending)
                pending = self.zlib.unconsumed_tail
                if out:
                    yield out
                if not pending and len(out) < STEP:
                    break  # all input taken and no output held back

    def _step(self, data: bytes | memoryview) -> bytes:
        first, self.started = not self.started, True
        try:
            return self.zlib.decompress(data, STEP)
        except zlib.error as exc:
            if first and self.coding == "deflate":  # some servers send raw deflate without zlib's header
                self.zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._step(data)
            raise BodyRefused(f"the body's {self.coding} data is corrupt: {exc}") from None
