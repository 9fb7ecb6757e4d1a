"""The baseline for ``bench/intake.py``: a bare Starlette app whose one POST route answers 200.

It runs on exactly the uvicorn settings the service uses (``service.server.uvicorn_config``:
uvloop, httptools, no access log), so the ratio between the two measures what the service
adds per request, not a difference in server configuration. Run as its own process:
``python bench/bare_app.py --port 8001``.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.server import uvicorn_config
from service.settings import WEBHOOK_PATH


async def accept(request: Request) -> Response:
    """Answer 200 without reading or checking anything."""
    return Response(status_code=200)


app = Starlette(routes=[Route(WEBHOOK_PATH, accept, methods=["POST"])])


def serve(app: Starlette, description: str | None = None) -> None:
    """Serve ``app`` on the ``--host``/``--port`` of the command line until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.Server(uvicorn_config(app, host=args.host, port=args.port)).run()


if __name__ == "__main__":
    serve(app, __doc__)
