"""The tunnel's wire protocol over a real WebSocket on loopback (the `websockets` library on
both ends): many exchanges at once on one connection, bodies streamed both ways with per-stream
credit so that one slow reader holds up only its own exchange, resets in both directions, and
every open exchange failing at once when the connection goes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from app.tunnel.protocol import (
    CHUNK_BYTES,
    END_FLAG,
    MAX_FRAME_BYTES,
    WINDOW_BYTES,
    Frame,
    Mux,
    Stream,
    StreamReset,
    TunnelClosed,
)


class Socket:
    """A `websockets` connection (either end) as the protocol's Transport."""

    def __init__(self, connection: ClientConnection | ServerConnection) -> None:
        self.connection = connection
        self.sent: list[int] = []  # the type byte of each message sent

    async def send(self, message: bytes) -> None:
        self.sent.append(message[0])
        try:
            await self.connection.send(message)
        except ConnectionClosed as exc:
            raise TunnelClosed("closed") from exc

    async def receive(self) -> bytes:
        try:
            message = await self.connection.recv()
        except ConnectionClosed as exc:
            raise TunnelClosed("closed") from exc
        assert isinstance(message, bytes)
        return message


Handler = Callable[[Stream], Awaitable[None]]


@contextlib.asynccontextmanager
async def tunnel(
    handler: Handler, *, version: int = 1
) -> AsyncIterator[tuple[Mux, dict[str, Any]]]:
    """The platform's end (yielded) connected to an answering end running `handler`; the dict
    holds what the answering side saw (its HELLO, its connection). `version` 2: both ends
    agreed to END flags."""
    seen: dict[str, Any] = {}
    ready = asyncio.Event()

    async def answering_side(connection: ServerConnection) -> None:
        seen["connection"] = connection
        seen["socket"] = Socket(connection)
        mux = Mux(seen["socket"], on_open=handler, end_flag=version == 2)
        seen["mux"] = mux
        ready.set()
        with contextlib.suppress(TunnelClosed):
            await mux.run()

    async with serve(answering_side, "127.0.0.1", 0, max_size=MAX_FRAME_BYTES) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", max_size=MAX_FRAME_BYTES) as client:
            seen["platform_socket"] = Socket(client)
            platform = Mux(
                seen["platform_socket"],
                on_hello=lambda info: seen.setdefault("hello", info),
                end_flag=version == 2,
            )
            reader = asyncio.create_task(platform.run())
            await ready.wait()
            try:
                yield platform, seen
            finally:
                await client.close()
                with contextlib.suppress(TunnelClosed):
                    await reader


async def echo(stream: Stream) -> None:
    """Answers with the request's head and then its body, as it comes."""
    assert stream.head is not None
    await stream.respond(200, {"content-type": "text/plain", "x-path": stream.head["path"]})
    async for chunk in stream.chunks():
        await stream.send(chunk)
    await stream.end()


async def exchange(mux: Mux, path: str, body: bytes = b"") -> tuple[dict[str, Any], bytes]:
    stream = await mux.open({"method": "POST", "path": path, "query": "", "headers": {}})

    async def upload() -> None:  # while the answer comes: the echo answers as it reads
        await stream.send(body, end=True)

    sending = asyncio.create_task(upload())
    head = await stream.response
    answer = await stream.body(limit=64 * 1024 * 1024)
    await sending
    return head, answer


@pytest.mark.parametrize("version", [1, 2])
async def test_exchanges_come_back_whole_and_to_their_own_caller(version: int) -> None:
    async with tunnel(echo, version=version) as (platform, _):
        bodies = {f"/api/v1/item-{i}": bytes([i]) * (i * 7919) for i in range(40)}
        answers = await asyncio.gather(*(exchange(platform, p, b) for p, b in bodies.items()))
        for (head, body), (path, sent) in zip(answers, bodies.items(), strict=True):
            assert head["status"] == 200
            assert head["headers"]["x-path"] == path
            assert body == sent
        assert platform.open_streams == 0  # finished exchanges leave nothing behind


@pytest.mark.parametrize("version", [1, 2])
async def test_a_body_larger_than_the_window_streams_through_in_both_directions(
    version: int,
) -> None:
    big = bytes(range(256)) * (5 * WINDOW_BYTES // 256)  # 1.25 MiB, 20 chunks of 64 KiB
    async with tunnel(echo, version=version) as (platform, _):
        head, body = await exchange(platform, "/big", big)
    assert head["status"] == 200
    assert body == big


async def test_a_reader_that_stops_reading_holds_up_only_its_own_exchange() -> None:
    async def endless(stream: Stream) -> None:
        await stream.respond(200, {})
        chunk = b"x" * CHUNK_BYTES
        while True:  # a watch that never ends; waits for credit once the window is full
            await stream.send(chunk)

    async def by_path(stream: Stream) -> None:
        assert stream.head is not None
        await (endless(stream) if stream.head["path"] == "/watch" else echo(stream))

    async with tunnel(by_path) as (platform, seen):
        watch = await platform.open({"method": "GET", "path": "/watch", "query": "", "headers": {}})
        await watch.end()
        assert (await watch.response)["status"] == 200
        await asyncio.sleep(0.2)  # the watch fills its window; nobody reads it
        # Other exchanges go on over the same connection meanwhile.
        for i in range(5):
            _, body = await asyncio.wait_for(exchange(platform, f"/other-{i}", b"hi"), 5)
            assert body == b"hi"
        # The watch then reads on where it stopped, and is cancelled by the platform.
        assert len(await watch.read()) == CHUNK_BYTES
        await watch.reset("the caller went away")
        await asyncio.sleep(0.1)
        assert seen["mux"].open_streams == 0  # the answering side's exchange ended too


async def test_an_exchange_the_answering_side_gives_up_fails_for_its_caller_only() -> None:
    async def refuses(stream: Stream) -> None:
        assert stream.head is not None
        if stream.head["path"] == "/bad":
            await stream.reset("path not allowed")
        else:
            await echo(stream)

    async with tunnel(refuses) as (platform, _):
        with pytest.raises(StreamReset, match="path not allowed"):
            await exchange(platform, "/bad")
        assert (await exchange(platform, "/good", b"ok"))[1] == b"ok"


async def test_the_connection_going_fails_every_open_exchange_at_once() -> None:
    started = asyncio.Event()

    async def hangs(stream: Stream) -> None:
        await stream.respond(200, {})
        started.set()
        await asyncio.Event().wait()

    async with tunnel(hangs) as (platform, seen):
        streams = [
            await platform.open({"method": "GET", "path": f"/{i}", "query": "", "headers": {}})
            for i in range(3)
        ]
        await started.wait()
        await seen["connection"].close()
        for stream in streams:
            with pytest.raises(TunnelClosed):
                await asyncio.wait_for(stream.read(), 5)
        with pytest.raises(TunnelClosed):
            await platform.open({"method": "GET", "path": "/", "query": "", "headers": {}})


async def test_hello_reaches_the_platform() -> None:
    async with tunnel(echo) as (_, seen):
        await seen["mux"].hello({"version": "0.1.0"})
        for _ in range(50):
            if "hello" in seen:
                break
            await asyncio.sleep(0.02)
    assert seen["hello"] == {"version": "0.1.0"}


async def test_a_malformed_frame_closes_the_connection_as_a_protocol_error() -> None:
    async with tunnel(echo) as (platform, seen):
        stream = await platform.open({"method": "GET", "path": "/", "query": "", "headers": {}})
        await platform.send(Frame.WINDOW, stream.id, b"\x00\x01\x02")  # credit is 4 bytes
        with pytest.raises(TunnelClosed):
            await asyncio.wait_for(stream.read(), 5)
        assert seen["mux"].closed


@pytest.mark.parametrize(
    ("version", "requests", "answers"),
    [
        (1, [Frame.OPEN, Frame.END], [Frame.RESPONSE, Frame.DATA, Frame.END]),
        (2, [Frame.OPEN | END_FLAG], [Frame.RESPONSE, Frame.DATA | END_FLAG]),
    ],
)
async def test_a_small_exchange_takes_five_messages_or_with_end_flags_three(
    version: int, requests: list[int], answers: list[int]
) -> None:
    """A GET answered with a small body. No WINDOW frames: neither side has more to send
    once the other has read. Version 2 ends each side's body on its last frame."""

    async def answer(stream: Stream) -> None:
        assert await stream.body(1024) == b""
        await stream.respond(200, {"content-type": "application/json"})
        await stream.send(b'{"gitVersion":"v1.30.0"}', end=True)

    async with tunnel(answer, version=version) as (platform, seen):
        stream = await platform.open({"method": "GET", "path": "/version"}, end=True)
        assert (await stream.response)["status"] == 200
        assert await stream.body(1024) == b'{"gitVersion":"v1.30.0"}'
        await asyncio.sleep(0.05)  # anything more either side would send
        assert seen["platform_socket"].sent == requests
        assert seen["socket"].sent == answers
        assert platform.open_streams == 0
        assert seen["mux"].open_streams == 0


async def test_an_end_flag_on_a_frame_that_carries_no_body_is_a_protocol_error() -> None:
    async with tunnel(echo, version=2) as (platform, seen):
        stream = await platform.open({"method": "GET", "path": "/", "query": "", "headers": {}})
        await platform.send(Frame.WINDOW, stream.id, b"\x00\x00\x00\x01", end=True)
        with pytest.raises(TunnelClosed):
            await asyncio.wait_for(stream.read(), 5)
        assert seen["mux"].closed
