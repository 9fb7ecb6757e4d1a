"""The app that ``bench/steps.py`` measures: the bare endpoint plus chosen request-path steps.

``STEPS`` (comma-separated) picks what each request does before its answer, in the
service's order: ``read`` the body, verify it with ``svix`` itself or with the service's
``verifier`` (the shortcut, svix for the rest), ``parse`` it as intake does, ``log`` the
delivery line at INFO, ``metrics`` (one counter), ``body`` (answer with a JSON body). No
store: the difference between this and ``bench/intake.py`` is the durable write. Same
uvicorn settings as the service. Run by bench/steps.py: ``STEPS=read,verifier SECRET=...
python bench/steps_app.py --port 8001``.
"""

from __future__ import annotations

import os

import orjson
import structlog
from bare_app import serve
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from svix.webhooks import Webhook

from service import metrics
from service.logging import configure_logging
from service.settings import WEBHOOK_PATH
from service.webhooks import Verifier, parse_delivery

STEPS = frozenset(filter(None, os.environ.get("STEPS", "").split(",")))
SECRET = os.environ["SECRET"]
_WANTED = frozenset((b"svix-id", b"svix-timestamp", b"svix-signature"))

configure_logging(fmt="json", level="INFO")
log = structlog.get_logger("autoreply.intake")
verifier = Verifier([SECRET])
webhook = Webhook(SECRET)


class Endpoint:
    """A plain ASGI app, as the service's webhook endpoint is (Starlette would wrap a
    function in a Request handler)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(scope, receive, send)


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """Do the chosen steps, then answer 202."""
    headers = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _WANTED
    }
    svix_id = headers.get("svix-id", "")
    if "read" in STEPS:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if "svix" in STEPS:
            webhook.verify(body.decode("utf-8"), dict(headers))
        if "verifier" in STEPS:
            verifier.verify(body, headers)
        if "parse" in STEPS:
            parse_delivery(svix_id, body)
    if "metrics" in STEPS:
        metrics.DELIVERIES.labels(outcome="accepted", status="202").inc()
    if "log" in STEPS:
        log.info("delivery", outcome="accepted", status=202, duration_ms=1.0, svix_id=svix_id)
    content = orjson.dumps({"status": "accepted"}) if "body" in STEPS else b""
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [(b"content-length", str(len(content)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": content})


app = Starlette(routes=[Route(WEBHOOK_PATH, Endpoint(), methods=["POST"])])


if __name__ == "__main__":
    serve(app, __doc__)
