"""Python clients for the sandbox's admin API (``/_sandbox/…``).

``SandboxClient`` (sync) and ``AsyncSandboxClient`` (async) expose the same methods;
both build their requests with the same :class:`_Requests` builders and read answers
with the same :func:`_read`, so only the transport differs. Used by tests, the
``autoreply sandbox`` verbs and the demo.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from service.sandbox.reports import (
    DeliveryReport,
    FaultReport,
    InjectResult,
    LabelChange,
    RedeliverResult,
    RequestsReport,
    SentEmail,
)

DEFAULT_URL = "http://127.0.0.1:9100"
POLL_INTERVAL = 0.02


class SandboxError(Exception):
    """The admin API answered with an error, or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] = field(default_factory=dict)


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class _Requests:
    """Builds every admin request; the two clients only send them."""

    @staticmethod
    def info() -> _Request:
        return _Request("GET", "/_sandbox/info")

    @staticmethod
    def inject(fields: Mapping[str, Any]) -> _Request:
        return _Request("POST", "/_sandbox/inbound", json=_clean(fields))

    @staticmethod
    def redeliver(
        delivery_id: str, *, copies: int, new_svix_id: bool, new_event_id: bool
    ) -> _Request:
        body = {"copies": copies, "new_svix_id": new_svix_id, "new_event_id": new_event_id}
        return _Request("POST", f"/_sandbox/deliveries/{delivery_id}/redeliver", json=body)

    @staticmethod
    def deliveries() -> _Request:
        return _Request("GET", "/_sandbox/deliveries")

    @staticmethod
    def delivery(delivery_id: str) -> _Request:
        return _Request("GET", f"/_sandbox/deliveries/{delivery_id}")

    @staticmethod
    def sent() -> _Request:
        return _Request("GET", "/_sandbox/sent")

    @staticmethod
    def label_changes() -> _Request:
        return _Request("GET", "/_sandbox/label-changes")

    @staticmethod
    def requests() -> _Request:
        return _Request("GET", "/_sandbox/requests")

    @staticmethod
    def add_fault(fields: Mapping[str, Any]) -> _Request:
        return _Request("POST", "/_sandbox/faults", json=_clean(fields))

    @staticmethod
    def faults() -> _Request:
        return _Request("GET", "/_sandbox/faults")

    @staticmethod
    def clear_faults() -> _Request:
        return _Request("DELETE", "/_sandbox/faults")

    @staticmethod
    def advance_clock(seconds: float) -> _Request:
        return _Request("POST", "/_sandbox/clock", json={"advance_seconds": seconds})

    @staticmethod
    def reset() -> _Request:
        return _Request("POST", "/_sandbox/reset")


def _inject_fields(
    *,
    inbox_id: str | None,
    from_: str | None,
    to: str | Sequence[str] | None,
    cc: str | Sequence[str] | None,
    reply_to: str | Sequence[str] | None,
    subject: str | None,
    text: str | None,
    html: str | None,
    headers: Mapping[str, str] | None,
    event_type: str | None,
    in_reply_to: str | None,
    references: Sequence[str] | None,
    labels: Sequence[str] | None,
    copies: int | None,
    message_id: str | None,
) -> dict[str, Any]:
    def many(value: str | Sequence[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [value] if isinstance(value, str) else list(value)

    return {
        "inbox_id": inbox_id,
        "from": from_,
        "to": many(to),
        "cc": many(cc),
        "reply_to": many(reply_to),
        "subject": subject,
        "text": text,
        "html": html,
        "headers": dict(headers) if headers is not None else None,
        "event_type": event_type,
        "in_reply_to": in_reply_to,
        "references": list(references) if references is not None else None,
        "labels": list(labels) if labels is not None else None,
        "copies": copies,
        "message_id": message_id,
    }


def _fault_fields(
    operation: str,
    *,
    status: int | None,
    rate: float | None,
    times: int | None,
    retry_after: int | None,
    latency_ms: int | None,
    after_send: bool | None,
) -> dict[str, Any]:
    return {
        "operation": operation,
        "status": status,
        "rate": rate,
        "times": times,
        "retry_after": retry_after,
        "latency_ms": latency_ms,
        "after_send": after_send,
    }


def _read(response: httpx.Response) -> Any:
    """The JSON answer, or a :class:`SandboxError` carrying the admin API's message."""
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        raise SandboxError(f"HTTP {response.status_code}: {message}", response.status_code)
    return response.json()


def _unreachable(base_url: str, exc: httpx.HTTPError) -> SandboxError:
    return SandboxError(f"sandbox not reachable at {base_url} ({type(exc).__name__})")


def settled(reports: Sequence[DeliveryReport]) -> bool:
    """Whether no delivery is still pending (all succeeded, failed or were cancelled)."""
    return all(report["state"] != "pending" for report in reports)


def _timeout_message(reports: Sequence[DeliveryReport], timeout: float) -> str:
    pending = [r["delivery_id"] for r in reports if r["state"] == "pending"]
    return f"{len(pending)} deliveries still pending after {timeout:g} s: {', '.join(pending)}"


class SandboxClient:
    """Synchronous admin client (``httpx.Client``)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, request: _Request) -> Any:
        try:
            response = self._http.request(
                request.method, request.path, json=request.json, params=dict(request.params)
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _read(response)

    def info(self) -> dict[str, Any]:
        """API keys, inboxes, time scale and the sandbox time."""
        return cast(dict[str, Any], self._send(_Requests.info()))

    def inject(
        self,
        *,
        inbox_id: str | None = None,
        from_: str | None = None,
        to: str | Sequence[str] | None = None,
        cc: str | Sequence[str] | None = None,
        reply_to: str | Sequence[str] | None = None,
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_type: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        copies: int | None = None,
        message_id: str | None = None,
    ) -> InjectResult:
        """Inject an inbound email; see ``POST /_sandbox/inbound``."""
        fields = _inject_fields(
            inbox_id=inbox_id, from_=from_, to=to, cc=cc, reply_to=reply_to, subject=subject,
            text=text, html=html, headers=headers, event_type=event_type,
            in_reply_to=in_reply_to, references=references, labels=labels, copies=copies,
            message_id=message_id,
        )  # fmt: skip
        return cast(InjectResult, self._send(_Requests.inject(fields)))

    def redeliver(
        self,
        delivery_id: str,
        *,
        copies: int = 1,
        new_svix_id: bool = False,
        new_event_id: bool = False,
    ) -> RedeliverResult:
        """Send a past delivery's body again (same or new svix-id / event_id)."""
        request = _Requests.redeliver(
            delivery_id, copies=copies, new_svix_id=new_svix_id, new_event_id=new_event_id
        )
        return cast(RedeliverResult, self._send(request))

    def deliveries(self) -> list[DeliveryReport]:
        """Every delivery with its attempts."""
        return cast(list[DeliveryReport], self._send(_Requests.deliveries()))

    def delivery(self, delivery_id: str) -> DeliveryReport:
        """One delivery with its attempts."""
        return cast(DeliveryReport, self._send(_Requests.delivery(delivery_id)))

    def sent(self) -> list[SentEmail]:
        """Every email actually sent."""
        return cast(list[SentEmail], self._send(_Requests.sent()))

    def label_changes(self) -> list[LabelChange]:
        """Every successful label PATCH."""
        return cast(list[LabelChange], self._send(_Requests.label_changes()))

    def requests(self) -> RequestsReport:
        """API call counts per operation and status."""
        return cast(RequestsReport, self._send(_Requests.requests()))

    def add_fault(
        self,
        operation: str,
        *,
        status: int | None = None,
        rate: float | None = None,
        times: int | None = None,
        retry_after: int | None = None,
        latency_ms: int | None = None,
        after_send: bool | None = None,
    ) -> FaultReport:
        """Install a fault on an operation (``*`` for all)."""
        fields = _fault_fields(
            operation, status=status, rate=rate, times=times, retry_after=retry_after,
            latency_ms=latency_ms, after_send=after_send,
        )  # fmt: skip
        return cast(FaultReport, self._send(_Requests.add_fault(fields)))

    def faults(self) -> list[FaultReport]:
        """The installed faults."""
        return cast(list[FaultReport], self._send(_Requests.faults()))

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._send(_Requests.clear_faults())

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the sandbox clock forward by ``seconds``."""
        return cast(dict[str, Any], self._send(_Requests.advance_clock(seconds)))

    def reset(self) -> None:
        """Back to the initial state."""
        self._send(_Requests.reset())

    def wait_for_deliveries(self, timeout: float = 10.0) -> list[DeliveryReport]:
        """Poll until no delivery is pending; return them all. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            reports = self.deliveries()
            if settled(reports):
                return reports
            if time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(reports, timeout))
            time.sleep(POLL_INTERVAL)

    def wait_for_sent(self, count: int, timeout: float = 10.0) -> list[SentEmail]:
        """Poll until at least ``count`` emails were sent; return them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            emails = self.sent()
            if len(emails) >= count:
                return emails
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(emails)} of {count} emails sent after {timeout:g} s")
            time.sleep(POLL_INTERVAL)


class AsyncSandboxClient:
    """Asynchronous admin client (``httpx.AsyncClient``); same methods as SandboxClient."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSandboxClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _send(self, request: _Request) -> Any:
        try:
            response = await self._http.request(
                request.method, request.path, json=request.json, params=dict(request.params)
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _read(response)

    async def info(self) -> dict[str, Any]:
        """API keys, inboxes, time scale and the sandbox time."""
        return cast(dict[str, Any], await self._send(_Requests.info()))

    async def inject(
        self,
        *,
        inbox_id: str | None = None,
        from_: str | None = None,
        to: str | Sequence[str] | None = None,
        cc: str | Sequence[str] | None = None,
        reply_to: str | Sequence[str] | None = None,
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_type: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        copies: int | None = None,
        message_id: str | None = None,
    ) -> InjectResult:
        """Inject an inbound email; see ``POST /_sandbox/inbound``."""
        fields = _inject_fields(
            inbox_id=inbox_id, from_=from_, to=to, cc=cc, reply_to=reply_to, subject=subject,
            text=text, html=html, headers=headers, event_type=event_type,
            in_reply_to=in_reply_to, references=references, labels=labels, copies=copies,
            message_id=message_id,
        )  # fmt: skip
        return cast(InjectResult, await self._send(_Requests.inject(fields)))

    async def redeliver(
        self,
        delivery_id: str,
        *,
        copies: int = 1,
        new_svix_id: bool = False,
        new_event_id: bool = False,
    ) -> RedeliverResult:
        """Send a past delivery's body again (same or new svix-id / event_id)."""
        request = _Requests.redeliver(
            delivery_id, copies=copies, new_svix_id=new_svix_id, new_event_id=new_event_id
        )
        return cast(RedeliverResult, await self._send(request))

    async def deliveries(self) -> list[DeliveryReport]:
        """Every delivery with its attempts."""
        return cast(list[DeliveryReport], await self._send(_Requests.deliveries()))

    async def delivery(self, delivery_id: str) -> DeliveryReport:
        """One delivery with its attempts."""
        return cast(DeliveryReport, await self._send(_Requests.delivery(delivery_id)))

    async def sent(self) -> list[SentEmail]:
        """Every email actually sent."""
        return cast(list[SentEmail], await self._send(_Requests.sent()))

    async def label_changes(self) -> list[LabelChange]:
        """Every successful label PATCH."""
        return cast(list[LabelChange], await self._send(_Requests.label_changes()))

    async def requests(self) -> RequestsReport:
        """API call counts per operation and status."""
        return cast(RequestsReport, await self._send(_Requests.requests()))

    async def add_fault(
        self,
        operation: str,
        *,
        status: int | None = None,
        rate: float | None = None,
        times: int | None = None,
        retry_after: int | None = None,
        latency_ms: int | None = None,
        after_send: bool | None = None,
    ) -> FaultReport:
        """Install a fault on an operation (``*`` for all)."""
        fields = _fault_fields(
            operation, status=status, rate=rate, times=times, retry_after=retry_after,
            latency_ms=latency_ms, after_send=after_send,
        )  # fmt: skip
        return cast(FaultReport, await self._send(_Requests.add_fault(fields)))

    async def faults(self) -> list[FaultReport]:
        """The installed faults."""
        return cast(list[FaultReport], await self._send(_Requests.faults()))

    async def clear_faults(self) -> None:
        """Remove every fault."""
        await self._send(_Requests.clear_faults())

    async def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the sandbox clock forward by ``seconds``."""
        return cast(dict[str, Any], await self._send(_Requests.advance_clock(seconds)))

    async def reset(self) -> None:
        """Back to the initial state."""
        await self._send(_Requests.reset())

    async def wait_for_deliveries(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109 - the same signature as the sync client
    ) -> list[DeliveryReport]:
        """Poll until no delivery is pending; return them all. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            reports = await self.deliveries()
            if settled(reports):
                return reports
            if time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(reports, timeout))
            await asyncio.sleep(POLL_INTERVAL)

    async def wait_for_sent(
        self,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109 - the same signature as the sync client
    ) -> list[SentEmail]:
        """Poll until at least ``count`` emails were sent; return them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            emails = await self.sent()
            if len(emails) >= count:
                return emails
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(emails)} of {count} emails sent after {timeout:g} s")
            await asyncio.sleep(POLL_INTERVAL)
