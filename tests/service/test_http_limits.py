"""What one client can make the service hold: request heads, slow clients, connections, logs.

Every test talks to the real ``autoreply serve`` (the same uvicorn configuration users
run) over TCP on 127.0.0.1, with raw sockets where a well-behaved HTTP client would not
send what an attacker sends. Time bounds are generous (the deadlines plus seconds):
the machines running these are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.http_limits import (
    BODY_TIMEOUT_SECONDS,
    HEAD_TIMEOUT_SECONDS,
    KEEP_ALIVE_SECONDS,
    LIMIT_CONCURRENCY,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
)
from service.intake import MAX_LOGGED_CHARS
from tests.support.intake import (
    WEBHOOK_PATH,
    intake_service,
    message_event,
    signed_headers,
)
from tests.support.service_process import ServiceProcess
from tests.support.waiting import until_awaited, until_sync

pytestmark = pytest.mark.slow

PATH = WEBHOOK_PATH
#: The Kubernetes memory limit of deploy/k8s.
CONTAINER_LIMIT_BYTES = 512 * 1024 * 1024
#: How long past a deadline the service may take to act on it, on a busy machine.
SLACK = 10.0
#: No log line about one request may be longer than this, whatever the request held.
MAX_LINE_BYTES = 4096


def start_service(folder: Path) -> ServiceProcess:
    return intake_service(folder, AUTOREPLY_DRY_RUN="1")


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service(tmp_path_factory.mktemp("limits"))
    yield service
    service.stop()


def delivery(n: int, **overrides: object) -> tuple[bytes, dict[str, str]]:
    """A signed ``message.received`` delivery, unique by ``n``."""
    event = message_event(n, **overrides)
    event.pop("thread")
    body = json.dumps(event).encode()
    return body, signed_headers(body, msg_id=f"msg_{n}_{time.monotonic_ns()}")


def head(path: str, headers: list[tuple[str, str]], *, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader, *, within: float) -> tuple[int, bytes]:
    """The status and the rest of what the server sent until it closed the connection."""
    async with asyncio.timeout(within):
        data = await reader.read()  # to EOF: every answer here must close the connection
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), data[:200]
    return int(status_line.split()[1]), rest


async def send_and_read(port: int, data: bytes, *, within: float = 10.0) -> tuple[int, bytes]:
    """Send ``data`` (in 64 KiB writes, stopping if the server closes), read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(data), 65536):
                writer.write(data[start : start + 65536])
                await writer.drain()
        return await read_answer(reader, within=within)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


# -- finding 2: request heads ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("x-big", "a" * (4 * 1024 * 1024))], id="one 4 MiB header"),
        pytest.param([("x-big", "a" * (MAX_HEAD_BYTES + 1))], id="one header over the limit"),
        pytest.param([(f"x-h{i}", "1") for i in range(MAX_HEADERS + 1)], id="too many headers"),
    ],
)
async def test_a_request_head_over_the_limits_is_refused_431(
    service: ServiceProcess, headers: list[tuple[str, str]]
) -> None:
    status, rest = await send_and_read(service.port, head(PATH, headers))
    assert status == 431, rest
    # The service goes on answering.
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(service.url + "/healthz")).status_code == 200


async def flood(port: int, prefix: bytes, unit: bytes, total: int) -> bool:
    """Send ``prefix``, then ``unit`` over and over up to ``total`` bytes, reading nothing;
    True if the service closed the connection before all of it went out."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    batch = unit * (65536 // len(unit))
    try:
        writer.write(prefix)
        sent = 0
        async with asyncio.timeout(60):
            while sent < total:
                writer.write(batch)
                await writer.drain()
                sent += len(batch)
    except (ConnectionError, TimeoutError):
        return True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return False


@pytest.mark.parametrize(
    ("prefix", "unit"),
    [
        pytest.param(b"", b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", id="pipelined requests"),
        pytest.param(
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nhost: x\r\n"
            b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n",
            b"a:b\r\n",
            id="chunked trailer fields",
        ),
    ],
)
async def test_one_connection_cannot_make_the_service_hold_what_it_sends(
    tmp_path: Path, prefix: bytes, unit: bytes
) -> None:
    """The security review's two floods: 16 MiB of back-to-back requests took the process
    to 1.1 GiB (uvicorn queues every pipelined request), and 70 MiB of chunked trailer
    fields to 1.6 GiB (no head limit counts them). Now the connection is closed early and
    the process stays small."""
    service = start_service(tmp_path)
    assert service.process is not None
    try:
        before = rss_bytes(service.process.pid)
        closed = await flood(service.port, prefix, unit, 32 * 1024 * 1024)
        assert closed
        assert rss_bytes(service.process.pid, "VmHWM") - before < 64 * 1024 * 1024
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(service.url + "/healthz")).status_code == 200
    finally:
        service.stop()


async def test_a_few_pipelined_requests_are_all_answered_in_order(service: ServiceProcess) -> None:
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
        for path in ("/healthz", "/nowhere", "/healthz")
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(requests)
        await writer.drain()
        received = b""
        async with asyncio.timeout(10):
            while received.count(b"HTTP/1.1 ") < 3:
                received += await reader.read(65536)
        statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]
        assert statuses == [200, 404, 200]
    finally:
        writer.close()


def test_a_head_within_the_limits_is_served(service: ServiceProcess) -> None:
    body, signed = delivery(1)
    count = MAX_HEADERS - len(signed) - 8  # httpx adds host, user-agent, content-length...
    padding = [(f"x-pad{i}", "p" * (MAX_HEAD_BYTES * 3 // 4 // count)) for i in range(count)]
    response = httpx.post(
        service.url + PATH, content=body, headers={**signed, **dict(padding)}, timeout=10
    )
    assert response.status_code == 202


async def test_a_head_that_never_ends_is_answered_408_and_closed(service: ServiceProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(b"POST /webhooks/agentmail HTTP/1.1\r\nhost: 127.0.0.1\r\nsvix-id: m")
        await writer.drain()
        status, _ = await read_answer(reader, within=HEAD_TIMEOUT_SECONDS + SLACK)
        assert status == 408
    finally:
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed(service: ServiceProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        async with asyncio.timeout(HEAD_TIMEOUT_SECONDS + SLACK):
            assert await reader.read() == b""
    finally:
        writer.close()


async def answer_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/healthz"
) -> tuple[int, bytes]:
    """Send ``GET path`` on an open connection and read its one answer, leaving the
    connection open: the status and the answer's head."""
    writer.write(head(path, [], method="GET"))
    await writer.drain()
    async with asyncio.timeout(10):
        answer_head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer_head)
        assert length is not None, answer_head
        await reader.readexactly(int(length.group(1)))
    return int(answer_head.split()[1]), answer_head


async def test_an_idle_keep_alive_connection_is_closed_a_busy_one_is_not(
    service: ServiceProcess,
) -> None:
    """After a complete request and answer, a connection that sends nothing more is
    closed by the service (``KEEP_ALIVE_SECONDS``), rather than held open for as long as
    the client likes; one that goes on sending requests over the same time stays open.

    The head deadline does not cover this: it runs from the first byte of a head, and an
    idle connection between requests has sent none.
    """
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", service.port)
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        for reader, writer in ((idle_reader, idle_writer), (busy_reader, busy_writer)):
            status, answer_head = await answer_on(reader, writer)
            assert status == 200
            assert b"connection: close" not in answer_head.lower()  # kept alive

        idle_closed = asyncio.Event()

        async def keep_busy() -> None:
            while not idle_closed.is_set():
                await asyncio.sleep(KEEP_ALIVE_SECONDS / 10)  # pacing: a request now and then
                status, _ = await answer_on(busy_reader, busy_writer)
                assert status == 200

        busy = asyncio.create_task(keep_busy())
        try:
            async with asyncio.timeout(30):  # generous: the setting is 5 s
                assert await idle_reader.read() == b""  # EOF: the service closed it
        finally:
            idle_closed.set()
            await busy
        # The busy connection, opened with the idle one, is still served.
        status, _ = await answer_on(busy_reader, busy_writer)
        assert status == 200
    finally:
        idle_writer.close()
        busy_writer.close()


async def test_a_body_shorter_than_its_content_length_is_answered_408(
    service: ServiceProcess,
) -> None:
    body, signed = delivery(2)
    signed["content-length"] = str(len(body) + 100)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(head(PATH, list(signed.items())) + body)
        await writer.drain()
        status, rest = await read_answer(reader, within=BODY_TIMEOUT_SECONDS + SLACK)
        assert status == 408
        assert b'"reason":"body not received within' in rest
    finally:
        writer.close()


async def stream_head(port: int, header_bytes: int) -> tuple[int, int]:
    """Send a request head with one header of ``header_bytes`` bytes, in 64 KiB writes,
    until the service answers or closes the connection: the answer's status (0 if none)
    and how many header bytes went out. Never holds the head in memory here."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read())  # returns at EOF
    chunk = b"a" * 65536
    sent = 0
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(b"POST /webhooks/agentmail HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
            while sent < header_bytes and not answer.done():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                await asyncio.sleep(0)  # let an answer in
            if not answer.done():
                writer.write(b"\r\n\r\n")
                await writer.drain()
        data = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(60):
                data = await answer
    finally:
        answer.cancel()
        writer.close()
    if not data:
        return 0, sent
    status_line = data.partition(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1.1 "), data[:200]
    return int(status_line.split()[1]), sent


async def test_a_big_head_and_hundreds_of_slow_clients_leave_the_service_answering(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The attack of the finding: a 320 MiB head (it took the process to 707 MiB, over
    the container's 512 MiB), and 300 slowloris clients.

    The head is streamed until the service answers 431, which it does once the head
    passes ``MAX_HEAD_BYTES``, so it costs the test a moment. Meanwhile ``/healthz`` and
    a valid delivery are answered within seconds, the slow clients are disconnected by
    the head deadline, and the process's peak memory (the kernel's high-water mark of
    its resident set) stays far inside the container's limit.
    """
    service = start_service(tmp_path)
    request.addfinalizer(service.stop)
    assert service.process is not None
    pid = service.process.pid
    slow_clients = 300
    closed_by_server = 0

    async def slow_client(started: asyncio.Event) -> None:
        nonlocal closed_by_server
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        try:
            writer.write(b"POST /webhooks/agentmail HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            await writer.drain()
            started.set()
            deadline = time.monotonic() + HEAD_TIMEOUT_SECONDS + SLACK
            while time.monotonic() < deadline:
                writer.write(b"x")  # a byte of a header name every half second
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await reader.read()  # returns at EOF only
                        closed_by_server += 1
                        return
        except ConnectionError:
            closed_by_server += 1
        finally:
            writer.close()

    async def answered_within(outgoing: httpx.Request, seconds: float) -> int:
        async with httpx.AsyncClient(timeout=seconds) as client:
            return (await client.send(outgoing)).status_code

    starts = [asyncio.Event() for _ in range(slow_clients)]
    slow = [asyncio.create_task(slow_client(started)) for started in starts]
    await asyncio.gather(*(started.wait() for started in starts))
    big_answer = asyncio.create_task(stream_head(service.port, 320 * 1024 * 1024))
    for n in range(5):
        assert await answered_within(httpx.Request("GET", service.url + "/healthz"), 5) == 200
        body, headers = delivery(100 + n)
        post = httpx.Request("POST", service.url + PATH, content=body, headers=headers)
        assert await answered_within(post, 5) == 202
        await asyncio.sleep(0.5)  # pacing: the checks spread over the attack, not a wait
    status, sent = await big_answer
    await asyncio.gather(*slow)
    peak = rss_bytes(pid, "VmHWM")
    service.stop()
    print(
        f"peak RSS {peak / 2**20:.0f} MiB, head answered {status} after {sent / 2**20:.1f} MiB,"
        f" {closed_by_server} slow clients closed"
    )
    assert peak < CONTAINER_LIMIT_BYTES // 2, f"peak RSS {peak / 2**20:.0f} MiB"
    assert status == 431
    assert closed_by_server == slow_clients


async def test_past_the_concurrency_limit_deliveries_get_503_and_healthz_still_200(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``limit_concurrency`` counts open connections; ``/healthz`` is exempt; past
    ``MAX_CONNECTIONS`` a new connection is closed unanswered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * MAX_CONNECTIONS + 200  # ours and the service's (it inherits the limit)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    service = start_service(tmp_path)
    request.addfinalizer(service.stop)
    idle: list[asyncio.StreamWriter] = []

    async def open_idle(count: int) -> None:
        for _ in range(count):
            _, writer = await asyncio.open_connection("127.0.0.1", service.port)
            idle.append(writer)

    async def status(outgoing: httpx.Request) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.send(outgoing)).status_code

    def post(n: int) -> httpx.Request:
        body, headers = delivery(n)
        return httpx.Request("POST", service.url + PATH, content=body, headers=headers)

    try:
        await open_idle(LIMIT_CONCURRENCY)
        assert await status(post(200)) == 503
        assert await status(httpx.Request("GET", service.url + "/healthz")) == 200
        await open_idle(MAX_CONNECTIONS - LIMIT_CONCURRENCY)
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(head("/healthz", [], method="GET"))
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(SLACK):
                assert await reader.read() == b""
        writer.close()
    finally:
        for writer in idle:
            writer.close()
    idle.clear()
    # The service notices the closed connections: deliveries are taken again.
    answers: list[int] = []

    async def taken_again() -> bool:
        answers.append(await status(post(201 + len(answers))))
        return answers[-1] != 503

    await until_awaited(taken_again, within=60, what="a delivery answered other than 503")
    assert answers[-1] == 202
    service.stop()


# -- finding 6: what reaches the log -------------------------------------------------------


def log_lines(service: ServiceProcess) -> list[str]:
    return service.log().splitlines()


def test_values_of_unverified_requests_are_cut_short_in_log_lines(
    service: ServiceProcess,
) -> None:
    before = len(log_lines(service))
    body, signed = delivery(3)
    huge_id = "i" * 20_000  # within the head limit, far over what a log line should carry
    response = httpx.post(
        service.url + PATH, content=body, headers={**signed, "svix-id": huge_id}, timeout=10
    )
    assert response.status_code == 401
    # A signed event of a type the service ignores, with a huge event id and type.
    ignored, signed = delivery(4, event_type="x" * 50_000, event_id="e" * 50_000)
    response = httpx.post(service.url + PATH, content=ignored, headers=signed, timeout=10)
    assert response.status_code == 200
    # A signed message.received without a message: the reason quotes the event type.
    bad, signed = delivery(5, event_type="message.received" + "y" * 50_000, message=None)
    response = httpx.post(service.url + PATH, content=bad, headers=signed, timeout=10)
    assert response.status_code == 400

    new = log_lines(service)[before:]
    deliveries = [json.loads(line) for line in new if '"delivery"' in line]
    assert len(deliveries) == 3, new
    assert all(len(line) < MAX_LINE_BYTES for line in new), [len(line) for line in new]
    unverified, ignored_line, refused = deliveries
    assert unverified["svix_id"].startswith("i" * MAX_LOGGED_CHARS)
    assert unverified["svix_id"].endswith("[20000 chars]")
    assert ignored_line["event_type"].endswith("[50000 chars]")
    assert refused["reason"].endswith("chars]")
    # The reason in the answer is cut short too.
    assert len(response.content) < MAX_LINE_BYTES


def test_values_of_verified_payloads_are_cut_short_in_job_lines(service: ServiceProcess) -> None:
    """The worker logs the message id of a signed body, which may be up to 1 MiB long."""
    huge_id = "<" + "m" * 100_000 + "@example.com>"
    body, signed = delivery(6)
    event = json.loads(body)
    event["message"]["message_id"] = huge_id
    event["message"]["headers"] = {"Auto-Submitted": "auto-generated" + "a" * 100_000}
    body, signed = delivery(6, message=event["message"])
    response = httpx.post(service.url + PATH, content=body, headers=signed, timeout=10)
    assert response.status_code == 202

    def job_line() -> str | None:
        for line in log_lines(service):
            if '"job_attempt"' in line and '"message_id":"<mmmm' in line:
                return line
        return None

    until_sync(
        lambda: job_line() is not None,
        timeout=30,
        what=lambda: "the job line in\n" + service.log()[-2000:],
    )
    line = job_line()
    assert line is not None, service.log()[-2000:]
    assert len(line) < MAX_LINE_BYTES, len(line)
    assert json.loads(line)["message_id"].endswith("[100014 chars]")
