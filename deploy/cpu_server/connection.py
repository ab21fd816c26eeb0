"""uvicorn's h11 connection handler with a deadline for each request's headers."""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_body

__all__ = ["GuardedH11Protocol", "guarded_protocol"]

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """Closes a connection whose request line and headers are not complete in time or size.

    uvicorn's own keep-alive timer stops at the first byte of a request, and nothing else
    limits how long headers may take: a client sending them a byte at a time would hold its
    connection (and a place under ``--limit-concurrency``) for as long as it liked. Here the
    clock starts when the connection opens, and again after every response.

    h11's size limit (``h11_max_incomplete_event_size``) only applies to headers still
    incomplete in its buffer; headers that arrive whole in one read pass it at any size. Here
    every byte before the blank line counts: beyond ``max_header_bytes`` the answer is 431.
    """

    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes: int = 0
    _tail: bytes = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # a request line or headers
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            size = self._header_bytes + (len(data) if end < 0 else end + 4 - len(self._tail))
            if size > self.max_header_bytes:
                self._refuse_headers()
                return
            self._header_bytes, self._tail = (size, window[-3:]) if end < 0 else (0, b"")
        super().data_received(data)

    def _refuse_headers(self) -> None:
        message = f"Request headers too large (more than {self.max_header_bytes} bytes)"
        body = json.dumps(error_body(message, 431), separators=(",", ":")).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self._disarm()
        self.transport.write(head.encode() + body)
        self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers have arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closing %s: no request headers in %g s", self.client, self.header_timeout)
            self.transport.close()


def guarded_protocol(header_timeout: float, max_header_bytes: int) -> type[GuardedH11Protocol]:
    """The handler class for uvicorn's ``http=`` setting, with these header limits."""
    limits = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)
