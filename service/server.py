"""How the app is served: uvicorn, with the bounded HTTP protocol of ``http_limits``.

``autoreply serve``, ``dev`` and ``demo``, the benchmarks and the tests all serve through
``uvicorn_config``, so what is measured and tested is what runs.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from service import http_limits


def uvicorn_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn settings every way of serving the app shares.

    The HTTP protocol is uvicorn's httptools one with the bounds of
    ``service.http_limits`` (head size, header count, head deadline, connections).
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=http_limits.LimitedHttpToolsProtocol,
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        limit_concurrency=http_limits.LIMIT_CONCURRENCY,
        timeout_keep_alive=http_limits.KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=30,
    )
