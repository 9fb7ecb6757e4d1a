"""Run any ASGI app under a real uvicorn on 127.0.0.1, in a background thread.

Like httpx's own test ``TestServer``: the socket is bound before the thread starts (so
the port is known and free), the caller blocks until uvicorn reports it is serving,
and leaving the context asks uvicorn to exit and joins the thread, running the app's
lifespan shutdown. Usage::

    with serve(app) as server:
        httpx.get(server.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from service.sandbox.client import SERVER_KEEP_ALIVE_SECONDS

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass
class RunningServer:
    """A started server: its base URL and the uvicorn ``Server`` behind it."""

    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread


class _ThreadServer(uvicorn.Server):
    """A uvicorn server that remembers a crash during startup instead of exiting."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.error: BaseException | None = None

    def run_in_thread(self, sock: socket.socket) -> None:
        try:
            self.run(sockets=[sock])
        except BaseException as exc:
            self.error = exc


@contextmanager
def serve(app: ASGIApp, *, log_level: str = "warning") -> Iterator[RunningServer]:
    """Serve ``app`` on a free 127.0.0.1 port for the duration of the ``with`` block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=SERVER_KEEP_ALIVE_SECONDS,
    )
    server = _ThreadServer(config)
    thread = threading.Thread(
        target=server.run_in_thread, args=(sock,), name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {port}: {server.error!r}")
            time.sleep(0.005)
        yield RunningServer(url=f"http://127.0.0.1:{port}", port=port, server=server, thread=thread)
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"uvicorn on port {port} did not stop within {STOP_TIMEOUT} s")
        if server.error is not None:
            raise RuntimeError(f"uvicorn on port {port} crashed") from server.error
