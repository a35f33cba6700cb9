"""An open-loop HTTP load generator that runs in a process of its own.

Why not httpx from the benchmark's process: that process also runs the simulated city (hundreds of MQTT
messages a second), and httpx costs a few milliseconds of CPU a request once thousands of requests
wait for its pool. The generator, not the server, then set the pace: the first runs of ``bench
requests`` measured the client. Here each request is pre-encoded, sent on one of a fixed set of
keep-alive connections with h11 (the HTTP/1.1 state machine uvicorn and httpx are built on), in a
separate process (``spawn``: nothing inherited from the caller's event loop).

Each request is scheduled at its instant (``i / rate`` after the start) and timed from that instant to
the end of its answer, so a slow server shows as latency rather than as a generator that waits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import h11


@dataclass(frozen=True)
class LoadResult:
    latencies_ms: list[float]
    statuses: dict[str, int]
    elapsed_s: float


def encode_form(host: str, path: str, form: dict[str, str]) -> tuple[h11.Request, bytes]:
    body = urlencode(form).encode()
    request = h11.Request(method="POST", target=path, headers=[
        ("Host", host), ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(body)))])
    return request, body


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: h11.Connection,
                request: h11.Request, body: bytes, answer: bytearray | None = None) -> int:
    writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    await writer.drain()
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                raise ConnectionError("the server closed the connection")
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data) and answer is not None:
            answer += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    conn.start_next_cycle()
    return status


async def _load(host: str, port: int, path: str, forms: list[dict[str, str]], rate: float,
                connections: int) -> LoadResult:
    encoded = [encode_form(f"{host}:{port}", path, form) for form in forms]
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection] | None] = asyncio.Queue()
    for _ in range(connections):
        reader, writer = await asyncio.open_connection(host, port)
        await pool.put((reader, writer, h11.Connection(h11.CLIENT)))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    started = time.perf_counter()

    async def one(i: int) -> None:
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        reader, writer, conn = await pool.get()
        try:
            status = str(await _send(reader, writer, conn, *encoded[i]))
        except (OSError, ConnectionError, h11.ProtocolError) as exc:
            status = type(exc).__name__
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            conn = h11.Connection(h11.CLIENT)
        await pool.put((reader, writer, conn))
        latencies.append((time.perf_counter() - scheduled) * 1000)
        statuses[status] = statuses.get(status, 0) + 1

    # Tasks are started as their instant approaches, not all at once: thousands of sleeping tasks
    # would only cost the generator time.
    tasks: list[asyncio.Task[None]] = []
    for i in range(len(encoded)):
        ahead = started + i / rate - time.perf_counter() - 0.05
        if ahead > 0:
            await asyncio.sleep(ahead)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not pool.empty():
        item = pool.get_nowait()
        if item is not None:
            item[1].close()
    return LoadResult(latencies, statuses, elapsed)


async def _get_each(host: str, port: int, paths: list[str], headers: list[tuple[str, str]]) -> tuple[LoadResult, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    conn = h11.Connection(h11.CLIENT)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    last = bytearray()
    started = time.perf_counter()
    try:
        for path in paths:
            request = h11.Request(method="GET", target=path, headers=[("Host", f"{host}:{port}"), *headers])
            last = bytearray()
            began = time.perf_counter()
            status = str(await _send(reader, writer, conn, request, b"", last))
            latencies.append((time.perf_counter() - began) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
    return LoadResult(latencies, statuses, time.perf_counter() - started), bytes(last)


def _get_child(out: Any, host: str, port: int, paths: list[str], headers: list[tuple[str, str]]) -> None:
    out.send(asyncio.run(_get_each(host, port, paths, headers)))
    out.close()


def _child(out: Any, host: str, port: int, path: str, forms: list[dict[str, str]], rate: float,
           connections: int) -> None:
    result = asyncio.run(_load(host, port, path, forms, rate, connections))
    out.send(result)
    out.close()


async def post_forms(host: str, port: int, path: str, forms: list[dict[str, str]], rate: float,
                     connections: int = 48) -> LoadResult:
    """POST ``forms`` open-loop at ``rate`` a second from a separate process; wait without blocking."""
    result: LoadResult = await _in_process(_child, (host, port, path, forms, rate, connections))
    return result


async def get_each(host: str, port: int, paths: list[str], headers: list[tuple[str, str]]) -> tuple[LoadResult, bytes]:
    """GET each path in turn on one keep-alive connection from a separate process, timing each answer
    (a closed loop: the latency of one caller); also returns the last answer's body."""
    answer: tuple[LoadResult, bytes] = await _in_process(_get_child, (host, port, paths, headers))
    return answer


async def _in_process(target: Any, args: tuple[Any, ...]) -> Any:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    child.close()
    try:
        while not parent.poll():
            if not process.is_alive() and not parent.poll():
                raise RuntimeError(f"the load generator exited with {process.exitcode}")
            await asyncio.sleep(0.2)
        return parent.recv()
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
