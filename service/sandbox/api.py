"""The REST API under ``/v0``: routing, auth, faults, Idempotency-Key, responses.

Every request goes: match the raw path -> check ``Authorization: Bearer`` -> read the
body -> (sends only) validate and reserve the Idempotency-Key -> draw faults (latency,
error before handling) -> perform the operation -> fault "after send" -> answer. The
work from the key reservation on runs in its own task, shielded from the request, so a
client that hangs up during injected latency cannot cancel a send the sandbox accepted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service.sandbox import drafts, inboxes, mail, webhooks
from service.sandbox.errors import ApiError, no_route
from service.sandbox.idempotency import check_key, fingerprint
from service.sandbox.routing import Pattern, raw_segments, resolve
from service.sandbox.state import Sandbox
from service.sandbox.validation import (
    parse_json_body,
    query_bool,
    query_datetime,
    query_int,
    query_values,
)

log = logging.getLogger(__name__)

SEND_OPERATIONS = frozenset(
    {"messages.send", "messages.reply", "messages.reply_all", "drafts.send"}
)
UNMATCHED = "unmatched"


@dataclass
class Call:
    """One API request as the operation handlers see it."""

    sandbox: Sandbox
    operation: str
    params: dict[str, str]
    query: QueryParams
    body: Any
    idempotency_key: str | None = None

    @property
    def inbox_id(self) -> str:
        """The ``{inbox_id}`` path parameter (lower-cased: addresses are case-insensitive)."""
        return self.params["inbox_id"].lower()

    @property
    def owner(self) -> str | None:
        """The inbox of an inbox-scoped webhook route, None on the org route."""
        value = self.params.get("inbox_id")
        return value.lower() if value is not None else None

    def page_args(self) -> dict[str, Any]:
        """``limit``, ``page_token`` and ``ascending`` from the query string."""
        return {
            "limit": query_int(self.query, "limit"),
            "page_token": self.query.get("page_token"),
            "ascending": query_bool(self.query, "ascending"),
        }


Outcome = tuple[int, Any]
Handler = Callable[[Call], Outcome]


# -- handlers ---------------------------------------------------------------------


def _webhooks_create(call: Call) -> Outcome:
    return 200, webhooks.create(call.sandbox, call.owner, call.body)


def _webhooks_get(call: Call) -> Outcome:
    return 200, webhooks.get(call.sandbox, call.owner, call.params["webhook_id"])


def _webhooks_list(call: Call) -> Outcome:
    return 200, webhooks.list_(call.sandbox, call.owner, **call.page_args())


def _webhooks_update(call: Call) -> Outcome:
    return 200, webhooks.update(call.sandbox, call.owner, call.params["webhook_id"], call.body)


def _webhooks_delete(call: Call) -> Outcome:
    webhooks.delete(call.sandbox, call.owner, call.params["webhook_id"])
    return 204, None


def _inboxes_create(call: Call) -> Outcome:
    return 200, inboxes.create(call.sandbox, call.body)


def _inboxes_get(call: Call) -> Outcome:
    return 200, inboxes.get(call.sandbox, call.inbox_id)


def _inboxes_list(call: Call) -> Outcome:
    return 200, inboxes.list_(call.sandbox, **call.page_args())


def _messages_get(call: Call) -> Outcome:
    return 200, mail.get(call.sandbox, call.inbox_id, call.params["message_id"])


def _page_query(q: QueryParams) -> dict[str, Any]:
    """The parameters every list shares, as ``mail.PageQuery`` fields."""
    return {
        "limit": query_int(q, "limit"),
        "page_token": q.get("page_token"),
        "labels": tuple(query_values(q.getlist("labels"), split_commas=True)),
        "before": query_datetime(q, "before"),
        "after": query_datetime(q, "after"),
        "ascending": bool(query_bool(q, "ascending")),
    }


def _list_query(q: QueryParams, *, senders: str, recipients: str) -> mail.ListQuery:
    """The list parameters shared by messages and threads; the names of the sender and
    recipient filters differ (``from``/``to`` for messages, ``senders``/``recipients``
    for threads)."""
    include = frozenset(
        flag
        for flag in ("include_spam", "include_blocked", "include_unauthenticated", "include_trash")
        if query_bool(q, flag)
    )
    return mail.ListQuery(
        **_page_query(q),
        include=include,
        senders=tuple(query_values(q.getlist(senders), split_commas=False)),
        recipients=tuple(query_values(q.getlist(recipients), split_commas=False)),
        subjects=tuple(query_values(q.getlist("subject"), split_commas=False)),
    )


def _messages_list(call: Call) -> Outcome:
    query = _list_query(call.query, senders="from", recipients="to")
    return 200, mail.list_(call.sandbox, call.inbox_id, query)


def _threads_list(call: Call) -> Outcome:
    inbox_id = call.inbox_id if "inbox_id" in call.params else None
    query = _list_query(call.query, senders="senders", recipients="recipients")
    return 200, mail.list_threads(call.sandbox, inbox_id, query)


def _messages_update(call: Call) -> Outcome:
    return 200, mail.update_labels(
        call.sandbox, call.inbox_id, call.params["message_id"], call.body
    )


def _send(call: Call) -> Outcome:
    outgoing = mail.parse_outgoing(call.sandbox, call.body, operation=call.operation)
    message = mail.send(
        call.sandbox,
        call.inbox_id,
        outgoing,
        operation=call.operation,
        original_id=call.params.get("message_id"),
        idempotency_key=call.idempotency_key,
    )
    return 200, {"message_id": message.message_id, "thread_id": message.thread_id}


def _threads_get(call: Call) -> Outcome:
    inbox_id = call.inbox_id if "inbox_id" in call.params else None
    return 200, mail.get_thread(
        call.sandbox,
        inbox_id,
        call.params["thread_id"],
        limit=query_int(call.query, "limit"),
        page_token=call.query.get("page_token"),
    )


def _drafts_create(call: Call) -> Outcome:
    return 200, drafts.create(call.sandbox, call.inbox_id, call.body)


def _drafts_get(call: Call) -> Outcome:
    inbox_id = call.inbox_id if "inbox_id" in call.params else None
    return 200, drafts.get(call.sandbox, inbox_id, call.params["draft_id"])


def _drafts_list(call: Call) -> Outcome:
    inbox_id = call.inbox_id if "inbox_id" in call.params else None
    query = mail.PageQuery(**_page_query(call.query))
    return 200, drafts.list_(call.sandbox, inbox_id, query)


def _drafts_update(call: Call) -> Outcome:
    return 200, drafts.update(call.sandbox, call.inbox_id, call.params["draft_id"], call.body)


def _drafts_delete(call: Call) -> Outcome:
    drafts.delete(call.sandbox, call.inbox_id, call.params["draft_id"])
    return 204, None


def _drafts_send(call: Call) -> Outcome:
    return 200, drafts.send(
        call.sandbox,
        call.inbox_id,
        call.params["draft_id"],
        call.body,
        idempotency_key=call.idempotency_key,
    )


@dataclass(frozen=True)
class Operation:
    """A named API operation and its handler."""

    name: str
    handler: Handler


def _routes() -> list[Pattern[Operation]]:
    table: list[tuple[str, str, str, Handler]] = []
    for base in ("v0/webhooks", "v0/inboxes/{inbox_id}/webhooks"):
        table += [
            ("GET", base, "webhooks.list", _webhooks_list),
            ("POST", base, "webhooks.create", _webhooks_create),
            ("GET", f"{base}/{{webhook_id}}", "webhooks.get", _webhooks_get),
            ("PATCH", f"{base}/{{webhook_id}}", "webhooks.update", _webhooks_update),
            ("DELETE", f"{base}/{{webhook_id}}", "webhooks.delete", _webhooks_delete),
        ]
    messages = "v0/inboxes/{inbox_id}/messages"
    drafts_path = "v0/inboxes/{inbox_id}/drafts"
    table += [
        ("GET", "v0/inboxes", "inboxes.list", _inboxes_list),
        ("POST", "v0/inboxes", "inboxes.create", _inboxes_create),
        ("GET", "v0/inboxes/{inbox_id}", "inboxes.get", _inboxes_get),
        ("GET", messages, "messages.list", _messages_list),
        ("POST", f"{messages}/send", "messages.send", _send),
        ("GET", f"{messages}/{{message_id}}", "messages.get", _messages_get),
        ("PATCH", f"{messages}/{{message_id}}", "messages.update", _messages_update),
        ("POST", f"{messages}/{{message_id}}/reply", "messages.reply", _send),
        ("POST", f"{messages}/{{message_id}}/reply-all", "messages.reply_all", _send),
        ("GET", "v0/inboxes/{inbox_id}/threads", "threads.list", _threads_list),
        ("GET", "v0/threads", "threads.list", _threads_list),
        ("GET", "v0/inboxes/{inbox_id}/threads/{thread_id}", "threads.get", _threads_get),
        ("GET", "v0/threads/{thread_id}", "threads.get", _threads_get),
        ("GET", f"{drafts_path}", "drafts.list", _drafts_list),
        ("POST", f"{drafts_path}", "drafts.create", _drafts_create),
        ("GET", f"{drafts_path}/{{draft_id}}", "drafts.get", _drafts_get),
        ("PATCH", f"{drafts_path}/{{draft_id}}", "drafts.update", _drafts_update),
        ("DELETE", f"{drafts_path}/{{draft_id}}", "drafts.delete", _drafts_delete),
        ("POST", f"{drafts_path}/{{draft_id}}/send", "drafts.send", _drafts_send),
        ("GET", "v0/drafts", "drafts.list", _drafts_list),
        ("GET", "v0/drafts/{draft_id}", "drafts.get", _drafts_get),
    ]
    return [Pattern(method, path, Operation(name, fn)) for method, path, name, fn in table]


ROUTES = _routes()


# -- the ASGI app -----------------------------------------------------------------


def error_response(error: ApiError) -> Response:
    """An API error as the documented JSON body."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


def _authenticate(sandbox: Sandbox, headers: Headers) -> None:
    raw = headers.get("authorization")
    if not raw or not raw.strip():
        raise ApiError(401, "Missing Authorization header", "missing_authorization")
    scheme, _, token = raw.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Authorization must be 'Bearer <api key>'", "missing_authorization")
    if token.strip() not in sandbox.api_keys:
        raise ApiError(401, "Unknown API key", "unknown_api_key")


class RestApi:
    """ASGI app serving ``/v0/…`` from a :class:`Sandbox`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._respond(request, scope)
        await response(scope, receive, send)

    async def _respond(self, request: Request, scope: Scope) -> Response:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        segments = raw_segments(raw_path.split(b"?", 1)[0])
        pattern, params, path_known = resolve(ROUTES, request.method, segments)
        operation = pattern.target.name if pattern else UNMATCHED
        try:
            _authenticate(self.sandbox, request.headers)
            if pattern is None:
                if path_known:
                    raise ApiError(
                        405, f"Method {request.method} not allowed", "method_not_allowed"
                    )
                raise no_route(request.method, "/" + "/".join(segments))
            try:
                raw_body = await request.body()
            except ClientDisconnect:
                return Response(status_code=499)
            call = Call(
                sandbox=self.sandbox,
                operation=operation,
                params=params,
                query=request.query_params,
                body=parse_json_body(raw_body) if request.method in {"POST", "PATCH"} else None,
            )
            if operation in SEND_OPERATIONS:
                call.idempotency_key = check_key(request.headers.get("idempotency-key"))
        except ApiError as error:
            self.sandbox.count_request(operation, error.status)
            return error_response(error)
        task: asyncio.Task[Response] = asyncio.get_running_loop().create_task(
            self._perform(pattern.target, call), name=f"sandbox-{operation}"
        )
        self.sandbox.track(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise
            # The operation itself was cancelled (reset or shutdown), not this request;
            # it is not counted, since a reset has just cleared the counts.
            return error_response(
                ApiError(503, "The sandbox was reset or is shutting down", "service_unavailable")
            )

    async def _perform(self, operation: Operation, call: Call) -> Response:
        """Run the operation to the end, whatever happens to the client connection."""
        sandbox = self.sandbox
        sandbox.in_flight[operation.name] += 1
        try:
            status, payload = await self._guarded(operation, call)
            response: Response = (
                Response(status_code=status) if payload is None else JSONResponse(payload, status)
            )
        except ApiError as error:
            status, response = error.status, error_response(error)
        except Exception:
            log.exception("sandbox operation %s failed", operation.name)
            status = 500
            response = error_response(ApiError(500, "Internal sandbox error", "internal_error"))
        finally:
            sandbox.in_flight[operation.name] -= 1
        sandbox.count_request(operation.name, status)
        return response

    async def _guarded(self, operation: Operation, call: Call) -> Outcome:
        """Idempotency-Key, faults and the operation itself, in the documented order."""
        sandbox = self.sandbox
        key = call.idempotency_key
        replay: dict[str, str] | None = None
        holding = False
        if key is not None:
            target = call.params.get("message_id") or call.params.get("draft_id")
            digest = fingerprint(operation.name, call.inbox_id, target, call.body)
            replay = sandbox.idempotency.begin(key, digest)
            holding = replay is None
        try:
            plan = sandbox.faults.draw(operation.name)
            if plan.latency_s > 0:
                await asyncio.sleep(plan.latency_s)
            if plan.before is not None:
                raise plan.before.error()
            if replay is not None:
                outcome: Outcome = (200, replay)
            else:
                outcome = operation.handler(call)
                if holding and key is not None:
                    sandbox.idempotency.complete(key, outcome[1])
                    holding = False
        finally:
            if holding and key is not None:
                sandbox.idempotency.release(key)
        if plan.after is not None:
            raise plan.after.error()
        return outcome
