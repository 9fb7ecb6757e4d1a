"""The AgentMail API as the service uses it, through the official ``agentmail`` SDK.

The only module that imports ``agentmail``. ``AgentMailApi`` is the adapter behind
``service.agentmail_port.AgentMailPort`` (the worker's calls) and ``SweepPort`` (the
catch-up sweep's listings), and also makes the
webhook calls of registration and the operators' commands. It turns every SDK or
transport failure into ``ApiFailure`` (defined in the port, re-exported here) with a
transient/permanent verdict, so the worker decides on that and never on exception
classes. The SDK's own retries are switched off (``max_retries=0``): the worker's
backoff, with its Idempotency-Key window, is the one retry loop.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from agentmail import AsyncAgentMail
from agentmail.core.api_error import ApiError
from agentmail.core.request_options import RequestOptions
from agentmail.environment import AgentMailEnvironment

from service.agentmail_port import RECEIVED_LABEL, MessagePage, ThreadPage, is_transient
from service.agentmail_port import ApiFailure as ApiFailure
from service.models import PreparedReply

_NO_RETRIES: RequestOptions = {"max_retries": 0}
#: Messages per page when reading a thread: the API's maximum, so one call covers any
#: thread of up to 100 messages.
THREAD_PAGE = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookInfo:
    """The parts of an AgentMail webhook that registration compares and uses."""

    webhook_id: str
    url: str
    event_types: tuple[str, ...]
    inbox_ids: tuple[str, ...]
    enabled: bool
    secret: str
    client_id: str | None


class AgentMailApi:
    """Async client for the handful of AgentMail calls the service makes.

    Satisfies ``AgentMailPort`` structurally (mypy checks it where the runtime hands
    it to the worker).
    """

    def __init__(self, *, api_key: str, base_url: str, timeout: float) -> None:
        ws = "ws" + base_url.removeprefix("http")
        self._http = httpx.AsyncClient(timeout=timeout)
        self._client = AsyncAgentMail(
            api_key=api_key,
            environment=AgentMailEnvironment(http=base_url, websockets=ws),
            timeout=timeout,
            httpx_client=self._http,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def get_message(self, inbox_id: str, message_id: str) -> dict[str, Any]:
        """The full message, in the webhook payload's JSON shape."""
        async with _as_api_failure("get message"):
            message = await self._client.inboxes.messages.get(
                _path(inbox_id), _path(message_id), request_options=_NO_RETRIES
            )
        data: dict[str, Any] = message.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data

    async def update_labels(
        self,
        inbox_id: str,
        message_id: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
    ) -> list[str]:
        """One atomic label change; returns the message's labels after it."""
        async with _as_api_failure("update labels"):
            response = await self._client.inboxes.messages.update(
                _path(inbox_id),
                _path(message_id),
                add_labels=list(add) if add else None,
                remove_labels=list(remove) if remove else None,
                request_options=_NO_RETRIES,
            )
        return list(response.labels)

    async def reply(self, inbox_id: str, message_id: str, reply: PreparedReply) -> str:
        """Send ``reply`` to the sender only; return the sent message's id."""
        async with _as_api_failure("reply"):
            response = await self._client.inboxes.messages.reply(
                _path(inbox_id),
                _path(message_id),
                to=[reply.to],
                reply_all=False,
                text=reply.text,
                html=reply.html if reply.html is not None else None,
                headers=reply.headers,
                idempotency_key=reply.idempotency_key,
                request_options=_NO_RETRIES,
            )
        return str(response.message_id)

    async def get_thread(
        self, inbox_id: str, thread_id: str, *, page_token: str | None = None
    ) -> ThreadPage:
        """One page of the thread's messages (up to 100), newest page first."""
        async with _as_api_failure("get thread"):
            thread = await self._client.inboxes.threads.get(
                _path(inbox_id),
                _path(thread_id),
                limit=THREAD_PAGE,
                page_token=page_token,
                request_options=_NO_RETRIES,
            )
        messages = [
            item.model_dump(mode="json", by_alias=True, exclude_unset=True)
            for item in thread.messages
        ]
        return ThreadPage(
            messages=messages, next_page_token=thread.next_page_token if messages else None
        )

    async def create_draft(
        self, inbox_id: str, message_id: str, reply: PreparedReply, *, client_id: str
    ) -> str:
        """Create the reply as a reply draft to the sender only; return its id.

        AgentMail's drafts take no custom headers (neither ``CreateDraftRequest`` nor
        ``Draft`` has the field), so ``reply.headers`` (``Auto-Submitted`` ...) cannot
        go with the draft: a person sends it, and it goes out as their message.
        """
        async with _as_api_failure("create draft"):
            draft = await self._client.inboxes.drafts.create(
                _path(inbox_id),
                in_reply_to=message_id,
                to=[reply.to],
                text=reply.text,
                html=reply.html if reply.html is not None else None,
                client_id=client_id,
                request_options=_NO_RETRIES,
            )
        return str(draft.draft_id)

    async def draft_exists(self, inbox_id: str, draft_id: str) -> bool:
        """Whether the draft is still there (404: sent or deleted)."""
        try:
            async with _as_api_failure("get draft"):
                await self._client.inboxes.drafts.get(
                    _path(inbox_id), _path(draft_id), request_options=_NO_RETRIES
                )
        except ApiFailure as failure:
            if failure.status == 404:
                return False
            raise
        return True

    async def list_drafts(self, inbox_id: str) -> list[dict[str, Any]]:
        """Every draft of the inbox (all pages), newest first, as JSON items."""
        drafts: list[dict[str, Any]] = []
        page_token: str | None = None
        while True:
            async with _as_api_failure("list drafts"):
                page = await self._client.inboxes.drafts.list(
                    _path(inbox_id), limit=100, page_token=page_token, request_options=_NO_RETRIES
                )
            drafts.extend(
                item.model_dump(mode="json", by_alias=True, exclude_unset=True)
                for item in page.drafts
            )
            page_token = page.next_page_token
            if not page_token or not page.drafts:
                return drafts

    async def send_draft(self, inbox_id: str, draft_id: str, *, idempotency_key: str) -> str:
        """Send a draft under ``idempotency_key``; return the sent message's id."""
        async with _as_api_failure("send draft"):
            response = await self._client.inboxes.drafts.send(
                _path(inbox_id),
                _path(draft_id),
                idempotency_key=idempotency_key,
                request_options=_NO_RETRIES,
            )
        return str(response.message_id)

    async def list_inbox_ids(self) -> list[str]:
        """Every inbox of the account, all pages (the sweep's scope without
        ``AUTOREPLY_INBOX_IDS``)."""
        inbox_ids: list[str] = []
        page_token: str | None = None
        while True:
            async with _as_api_failure("list inboxes"):
                page = await self._client.inboxes.list(
                    limit=100, page_token=page_token, request_options=_NO_RETRIES
                )
            inbox_ids.extend(str(inbox.inbox_id) for inbox in page.inboxes)
            page_token = page.next_page_token
            if not page_token or not page.inboxes:
                return inbox_ids

    async def list_received(
        self, inbox_id: str, *, after: datetime, limit: int, page_token: str | None = None
    ) -> MessagePage:
        """One page of the inbox's received messages after ``after``, oldest first.

        Spam, blocked and unauthenticated messages stay hidden (the list's default): the
        service never answers them, so the sweep need not see them.
        """
        async with _as_api_failure("list messages"):
            page = await self._client.inboxes.messages.list(
                _path(inbox_id),
                limit=limit,
                page_token=page_token,
                labels=[RECEIVED_LABEL],
                after=after,
                ascending=True,
                request_options=_NO_RETRIES,
            )
        messages = [
            item.model_dump(mode="json", by_alias=True, exclude_unset=True)
            for item in page.messages
        ]
        return MessagePage(
            messages=messages, next_page_token=page.next_page_token if messages else None
        )

    async def create_webhook(
        self, *, url: str, event_types: Sequence[str], inbox_ids: Sequence[str], client_id: str
    ) -> WebhookInfo:
        """Create a webhook, or get the one ``client_id`` already names (unchanged)."""
        async with _as_api_failure("create webhook"):
            webhook = await self._client.webhooks.create(
                url=url,
                event_types=list(event_types),
                inbox_ids=list(inbox_ids) if inbox_ids else None,
                client_id=client_id,
                request_options=_NO_RETRIES,
            )
        return _webhook_info(webhook)

    async def list_webhooks(self) -> list[WebhookInfo]:
        """Every webhook of the account (read-only; ``autoreply status`` compares them)."""
        webhooks: list[WebhookInfo] = []
        page_token: str | None = None
        while True:
            async with _as_api_failure("list webhooks"):
                page = await self._client.webhooks.list(
                    limit=100, page_token=page_token, request_options=_NO_RETRIES
                )
            webhooks.extend(_webhook_info(webhook) for webhook in page.webhooks)
            page_token = page.next_page_token
            if not page_token or not page.webhooks:
                return webhooks

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        event_types: Sequence[str] | None = None,
        enabled: bool | None = None,
        add_inbox_ids: Sequence[str] = (),
        remove_inbox_ids: Sequence[str] = (),
    ) -> WebhookInfo:
        """Change what the API allows to change on a webhook."""
        async with _as_api_failure("update webhook"):
            webhook = await self._client.webhooks.update(
                webhook_id,
                event_types=list(event_types) if event_types else None,
                enabled=enabled,
                add_inbox_ids=list(add_inbox_ids) if add_inbox_ids else None,
                remove_inbox_ids=list(remove_inbox_ids) if remove_inbox_ids else None,
                request_options=_NO_RETRIES,
            )
        return _webhook_info(webhook)

    async def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook; one already gone counts as deleted."""
        try:
            async with _as_api_failure("delete webhook"):
                await self._client.webhooks.delete(webhook_id, request_options=_NO_RETRIES)
        except ApiFailure as failure:
            if failure.status != 404:
                raise


def _path(value: str) -> str:
    # The SDK leaves "/", "?", "#" and "%" of path parameters as they are, which
    # breaks Message-IDs holding them; httpx keeps escapes made here untouched.
    return quote(value, safe="@")


def _webhook_info(webhook: Any) -> WebhookInfo:
    return WebhookInfo(
        webhook_id=webhook.webhook_id,
        url=webhook.url,
        event_types=tuple(webhook.event_types or ()),
        inbox_ids=tuple(sorted(webhook.inbox_ids or ())),
        enabled=bool(webhook.enabled),
        secret=webhook.secret,
        client_id=webhook.client_id,
    )


class _as_api_failure:
    """Context manager mapping SDK and transport errors to ``ApiFailure``."""

    def __init__(self, action: str) -> None:
        self.action = action

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, ApiFailure):
            return
        if isinstance(exc, ApiError):
            raise _from_api_error(self.action, exc) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise ApiFailure(f"{self.action}: timed out", transient=True) from exc
        if isinstance(exc, httpx.TransportError):
            raise ApiFailure(f"{self.action}: {type(exc).__name__}", transient=True) from exc


def _from_api_error(action: str, exc: ApiError) -> ApiFailure:
    status = exc.status_code
    detail = _error_detail(exc.body)
    return ApiFailure(
        f"{action}: HTTP {status}{': ' + detail if detail else ''}",
        transient=is_transient(status),
        status=status,
        retry_after=_retry_after(exc.headers or {}),
    )


def _error_detail(body: Any) -> str:
    if isinstance(body, dict):
        code = body.get("code") or body.get("name") or ""
        message = body.get("message") or ""
        return f"{code} {message}".strip()[:300]
    if body is None:
        return ""
    return str(body)[:300]


def _retry_after(headers: dict[str, str]) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
