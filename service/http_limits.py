"""What one HTTP client can make the server hold: head size, header count, time, connections.

uvicorn's httptools protocol, the fast parser the service runs on, bounds none of the
request head: it buffers a header of any size (a 320 MiB one took the process to 707 MiB)
and waits forever for a head that trickles in or never comes. The image is also run bare
(``docker run -p``), with no proxy in front to bound these, so the service bounds them
itself, in :class:`LimitedHttpToolsProtocol`, a subclass of uvicorn's protocol that
``service.server.uvicorn_config`` installs:

- the request head (request line and headers) is refused with **431** past
  :data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS`, and the connection closed;
- a head must arrive within :data:`HEAD_TIMEOUT_SECONDS` of its first byte (of the
  connection, for a new one): **408** and close, or just close if nothing was sent;
- a response sent before its request's body was read (a refusal, a 404) closes the
  connection, so a body that never ends is not read forever;
- past :data:`MAX_CONNECTIONS` open connections a new one is closed at once, and
  ``GET /healthz`` is exempt from uvicorn's ``limit_concurrency`` 503 (see below);
- a connection that queues more than :data:`MAX_PIPELINED` requests behind the one being
  answered, or sends chunked trailer fields, is closed (no answer could come in order).

The webhook endpoint bounds the time to receive its body itself
(:data:`BODY_TIMEOUT_SECONDS`, ``service.intake``), and the body's size (1 MiB).

The subclass overrides per-request methods only where it must (the data feed, the end of
the head, the end of the message and of the response), counts header bytes once per
request, at the end of the head, rather than per header callback, and holds the head
deadline with one timer a second for all connections (:data:`SWEEP_SECONDS`) rather than
one per request; what it costs is in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

#: Request line plus headers. Twice the default of h11 and Node.js (16 KiB): Svix's own
#: headers take under 1 KiB, and proxies add a few (``X-Forwarded-*``, tracing).
MAX_HEAD_BYTES = 32 * 1024
#: Header fields per request, as Apache's ``LimitRequestFields``.
MAX_HEADERS = 100
#: From the first byte of a request head (or from the connection, for its first one)
#: to its end. A head is one or two TCP segments; ten seconds is slow by any measure.
HEAD_TIMEOUT_SECONDS = 10.0
#: From the end of the head to the end of the webhook's body (at most 1 MiB). Svix gives
#: up on an attempt after 15 s, so a slower body could not be acknowledged anyway.
BODY_TIMEOUT_SECONDS = 15.0
#: An idle keep-alive connection is closed after this (uvicorn's default, made explicit).
KEEP_ALIVE_SECONDS = 5
#: uvicorn's ``limit_concurrency``: at this many open connections, or requests in
#: progress, further requests are answered 503 (Svix retries them). Far above what the
#: service acknowledges at once (wrk's 64 connections saturate it), so that a few hundred
#: slow or idle connections do not shut deliveries out; memory is bounded per connection
#: (a head of at most 32 KiB) and, for bodies, by ``service.intake.MAX_BODIES_BYTES``.
LIMIT_CONCURRENCY = 1000
#: Open connections past which a new one is closed at once: file descriptors, and memory
#: (1,990 connections holding 31 KiB of head each took 74 MiB). Between the two limits a
#: connection still gets its 503, or its ``/healthz`` answer.
MAX_CONNECTIONS = 2 * LIMIT_CONCURRENCY
#: After a refusal (431, 408) the connection reads and drops what the client still sends
#: for this long before it closes: closing with unread data would reset the connection,
#: and the client could lose the answer.
LINGER_SECONDS = 2.0
#: How often the open connections are checked against the head deadline. One timer for
#: all of them: a timer per request cost more than all the other bounds together.
SWEEP_SECONDS = 1.0
#: Requests a connection may queue behind the one being answered (HTTP/1.1 pipelining;
#: Svix never pipelines). uvicorn queues every pipelined request with no bound: 16 MiB of
#: back-to-back ``GET /healthz`` took the process to 1.1 GiB.
MAX_PIPELINED = 8

#: Paths answered even past ``limit_concurrency``: the liveness probe must not restart
#: a process that is merely busy. They read no body and touch no store.
UNLIMITED_PATHS = frozenset({b"/healthz"})

log = logging.getLogger("autoreply.http")


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the status is on the protocol."""


#: Servers whose connections a sweep is scheduled for.
_SWEEPING: weakref.WeakSet[ServerState] = weakref.WeakSet()


def _sweep(loop: asyncio.AbstractEventLoop, state: ServerState) -> None:
    """Hold every connection of ``state`` to its head deadline; again in a second, while any."""
    now = loop.time()
    for connection in list(state.connections):
        if isinstance(connection, LimitedHttpToolsProtocol):
            connection.check_head_deadline(now)
    if state.connections:
        loop.call_later(SWEEP_SECONDS, _sweep, loop, state)
    else:
        _SWEEPING.discard(state)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request head, its time and connections.

    Pass it as ``uvicorn.Config(http=LimitedHttpToolsProtocol)``. The bounds are the
    module's constants; a refusal is logged (reason only, no request value) at INFO.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # True from the end of one message (or the connection's start) to the end of the
        # next head; bytes fed meanwhile are head bytes.
        self._awaiting_head = True
        self._head_received = 0
        # When the wait for the current head began (loop time); None while none is due.
        self._head_since: float | None = None
        self._refusal: tuple[int, str] | None = None
        self._discarding = False
        # Header fields of the request being read, to notice chunked trailer fields.
        self._head_fields = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; close it at once past :data:`MAX_CONNECTIONS`."""
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            log.info("http_refused", extra={"reason": "too many connections"})
            transport.abort()
            return
        self._head_since = self.loop.time()
        if self.server_state not in _SWEEPING:
            _SWEEPING.add(self.server_state)
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.server_state)

    def data_received(self, data: bytes) -> None:
        """Feed the parser (as uvicorn does), counting and timing the bytes of a head."""
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self._head_received += len(data)
            if self._head_since is None:
                self._head_since = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._discarding:  # closed from a callback (see _drop)
                return
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Still inside a head after this chunk: everything received since it began is
        # head, including the partial header httptools holds. (A head completed within
        # the chunk was measured exactly in on_headers_complete.)
        if self._awaiting_head:
            if self._head_received > MAX_HEAD_BYTES:
                self._refuse(431, f"request head over {MAX_HEAD_BYTES} bytes")
        elif len(self.headers) > self._head_fields:
            # httptools hands chunked trailer fields to on_header after the head, where
            # no limit counts them (70 MiB of them took 1.6 GiB); no endpoint needs any.
            self._drop("chunked trailer fields")

    def on_headers_complete(self) -> None:
        """Check the head's size and header count, then start the request as uvicorn does."""
        self._awaiting_head = False
        self._head_since = None
        headers = self.headers
        self._head_fields = len(headers)
        # Only a request arriving while an earlier one is being answered is queued.
        if len(self.pipeline) >= MAX_PIPELINED:
            self._drop(f"over {MAX_PIPELINED} pipelined requests")
            raise _Refused
        if len(headers) > MAX_HEADERS:
            self._refusal = (431, f"over {MAX_HEADERS} header fields")
            raise _Refused
        # The bytes fed since the head began bound its size from above; only past the
        # limit (a body in the same read, or a head really too big) is it measured. (A
        # pipelined head that began in the read that ended the previous request is
        # counted from the next read on: up to one read, 256 KiB, more gets through.)
        if self._head_received > MAX_HEAD_BYTES:
            size = len(self.url)
            for name, value in headers:
                size += len(name) + len(value)
            # ": " and CRLF per field; method, version and CRLFs of the request line.
            if size + 4 * len(headers) + 16 > MAX_HEAD_BYTES:
                self._refusal = (431, f"request head over {MAX_HEAD_BYTES} bytes")
                raise _Refused
        if self.limit_concurrency is not None and self.url in UNLIMITED_PATHS:
            self.limit_concurrency = None
            try:
                super().on_headers_complete()
            finally:
                self.limit_concurrency = self.config.limit_concurrency
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is complete: whatever comes next is the next request's head."""
        super().on_message_complete()
        self._awaiting_head = True
        self._head_received = 0

    def on_response_complete(self) -> None:
        """Close a connection whose response went out before its request body was read.

        Otherwise uvicorn would keep reading (and dropping) a body that may never end,
        such as one whose ``Content-Length`` is larger than what is sent.
        """
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body:
            self.transport.close()
        super().on_response_complete()

    def check_head_deadline(self, now: float) -> None:
        """Answer 408 (or close) if the current head is overdue at loop time ``now``."""
        since = self._head_since
        if since is None or now - since < HEAD_TIMEOUT_SECONDS or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head began while the previous request is still being answered
            # (by a store that is slow to answer, say): its time starts over.
            self._head_since = now
        elif self._head_received:
            self._refuse(408, f"request head not received within {HEAD_TIMEOUT_SECONDS:g} s")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _drop(self, reason: str) -> None:
        """Close the connection without an answer: one now would come out of order, ahead
        of the answers still owed to earlier requests on it."""
        log.info("http_refused", extra={"reason": reason})
        self._discarding = True
        self._head_since = None
        self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` with ``reason`` as text; close once the client had time to read it.

        The answer is followed by a FIN (``write_eof``); what the client still sends is
        dropped unparsed for :data:`LINGER_SECONDS`, then the connection is closed.
        """
        log.info("http_refused", extra={"status": status, "reason": reason})
        self._head_since = None
        body = reason.encode("ascii")
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._discarding = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
