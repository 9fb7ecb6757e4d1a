"""Fault injection per API operation: error statuses, 429 with Retry-After, latency,
and "fail after send" (the operation is performed and recorded, then the caller gets an
error). Faults stack; each has a firing ``rate`` and an optional budget of ``times``.
Random draws come from a ``random.Random(seed)`` so a seeded sandbox fails the same way
on every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from service.sandbox.errors import ApiError
from service.sandbox.reports import FaultReport

# Every operation name the REST API uses; "*" in a fault matches all of them.
OPERATIONS = (
    "webhooks.create",
    "webhooks.get",
    "webhooks.list",
    "webhooks.update",
    "webhooks.delete",
    "inboxes.create",
    "inboxes.get",
    "inboxes.list",
    "messages.get",
    "messages.list",
    "messages.update",
    "messages.send",
    "messages.reply",
    "messages.reply_all",
    "threads.list",
    "threads.get",
    "drafts.create",
    "drafts.get",
    "drafts.list",
    "drafts.update",
    "drafts.delete",
    "drafts.send",
)
ANY_OPERATION = "*"


@dataclass
class Fault:
    """One installed fault. ``status`` is None only for a pure latency fault."""

    fault_id: str
    operation: str
    status: int | None
    rate: float = 1.0
    times: int | None = None
    retry_after: int | None = None
    latency_ms: int = 0
    after_send: bool = False
    fired: int = 0

    def exhausted(self) -> bool:
        """Whether the fault has used up its ``times`` budget."""
        return self.times is not None and self.fired >= self.times

    def error(self) -> ApiError:
        """The error answer this fault produces."""
        assert self.status is not None
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        detail = "after the operation was performed" if self.after_send else "before handling"
        return ApiError(
            self.status,
            f"Injected fault {self.fault_id} ({self.status}) {detail}",
            headers=headers,
        )

    def report(self) -> FaultReport:
        """The admin API's view of this fault."""
        return {
            "fault_id": self.fault_id,
            "operation": self.operation,
            "status": self.status,
            "rate": self.rate,
            "times": self.times,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "after_send": self.after_send,
            "fired": self.fired,
        }


@dataclass(frozen=True)
class Plan:
    """What the faults decided for one request: wait, then maybe fail before or after."""

    latency_s: float = 0.0
    before: Fault | None = None
    after: Fault | None = None


class FaultSet:
    """The installed faults, drawn once per API request."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._counter = 0

    def add(
        self,
        operation: str,
        *,
        status: int | None = None,
        rate: float = 1.0,
        times: int | None = None,
        retry_after: int | None = None,
        latency_ms: int = 0,
        after_send: bool = False,
    ) -> Fault:
        """Install a fault. Without a status it fails with 500, unless it is pure latency."""
        if status is None and (after_send or latency_ms == 0):
            status = 500
        self._counter += 1
        fault = Fault(
            fault_id=f"flt_{self._counter}",
            operation=operation,
            status=status,
            rate=rate,
            times=times,
            retry_after=retry_after,
            latency_ms=latency_ms,
            after_send=after_send,
        )
        self._faults.append(fault)
        return fault

    def list(self) -> list[Fault]:
        """The installed faults, oldest first."""
        return list(self._faults)

    def clear(self) -> None:
        """Remove every fault and restart the random sequence."""
        self._faults.clear()
        self._rng = random.Random(self._seed)

    def draw(self, operation: str) -> Plan:
        """Decide which faults fire for one request of ``operation``.

        Latencies of all firing faults add up; the first firing status fault of each kind
        (before / after the operation) decides the answer.
        """
        latency_ms = 0
        before: Fault | None = None
        after: Fault | None = None
        for fault in self._faults:
            if fault.operation not in (operation, ANY_OPERATION) or fault.exhausted():
                continue
            if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                continue
            fault.fired += 1
            latency_ms += fault.latency_ms
            if fault.status is None:
                continue
            if fault.after_send:
                after = after or fault
            else:
                before = before or fault
        return Plan(latency_s=latency_ms / 1000.0, before=before, after=after)
