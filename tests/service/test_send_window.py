"""A reply whose Idempotency-Key may have expired is never sent again.

The worker runs in-process with a clock the test moves, against the sandbox over HTTP
and a real SQLite file: the first send fails, the retry comes due only after the key's
window, and the worker must dead-letter the job instead of resending.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from handlers.retry import SEND_WINDOW, RetryPolicy
from service.agentmail_api import AgentMailApi
from service.models import Delivery, JobState, MessageRef
from service.store import open_store
from tests.support.waiting import until_awaited
from tests.support.workers import make_worker


async def test_retry_after_the_key_window_is_dead_lettered_not_resent(
    sandbox: Any, tmp_path: Path
) -> None:
    """First send fails; 24 h later the due retry is refused: no email, job dead with the reason."""
    injected = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi", text="Hello"
    )
    inbox, message_id = sandbox.inbox, injected["message_id"]
    sandbox.admin.add_fault("messages.reply", status=500)
    api = AgentMailApi(api_key=sandbox.api_key, base_url=sandbox.url, timeout=5)
    store = open_store(f"sqlite:///{tmp_path / 'window.db'}")
    await store.open()
    now = [time.time()]
    worker = make_worker(
        store, api, concurrency=2, retry=RetryPolicy(base=2.0, cap=2.0), clock=lambda: now[0]
    )
    try:
        message = await api.get_message(inbox, message_id)
        delivery = Delivery(
            svix_id="msg_1",
            event_id="evt_1",
            event_type="message.received",
            message=MessageRef(
                inbox_id=inbox, message_id=message_id, thread_id=injected["thread_id"]
            ),
            message_json=orjson.dumps(message).decode(),
        )
        await store.record_delivery(delivery, now=now[0])
        await worker.start()

        async def failed_once() -> bool:
            job = await store.get_job(inbox, message_id)
            return job is not None and job.state is JobState.PENDING and job.reply is not None

        await until_awaited(failed_once, within=30, what="the first send to fail")
        sandbox.admin.clear_faults()
        now[0] += SEND_WINDOW + 3600
        worker.wake()

        async def finished() -> bool:
            job = await store.get_job(inbox, message_id)
            return job is not None and job.state is JobState.DEAD

        await until_awaited(finished, within=30, what="the job to be dead-lettered")
        job = await store.get_job(inbox, message_id)
        assert job is not None
        assert job.reason == "send window passed; not resending"
        assert sandbox.admin.sent() == []
    finally:
        await worker.stop(5)
        await api.aclose()
        await store.close()
