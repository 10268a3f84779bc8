"""The tunnel's wire protocol: many HTTP exchanges at once over the one WebSocket an edge agent
dials out to the platform (the platform cannot dial the edge: NAT, firewalls).

Every WebSocket message is one binary frame: a type (1 byte), a stream id (4 bytes, big
endian) and a payload. The platform opens streams (ids it picks, from 1); the agent answers
them. A stream is one HTTP exchange:

    platform → agent   OPEN {method, path, query, headers}, DATA…, END
    agent → platform   RESPONSE {status, headers}, DATA…, END   (or RESET {reason} at any time)

Bodies are streamed in both directions (a watch is an answer that does not end). Each side
may have at most WINDOW_BYTES of a stream's body in flight that the other has not read yet
(WINDOW frames give credit back as the reader consumes), so one slow reader holds up only its
own stream, never the connection: the frame reader never waits for a stream's consumer. As in
HTTP/2, but for a transport whose one library (websockets) both ends already use.

Stream 0 carries the connection's own messages: HELLO (the agent says what it is, JSON).
Liveness is the WebSocket's own ping/pong, on both ends.

Version 2 (the WebSocket subprotocol `edge-tunnel.v2`, when both ends offer it) adds one thing,
HTTP/2's END_STREAM: the type byte's high bit (END_FLAG) on an OPEN, RESPONSE or DATA frame
ends that side's body with it, so a GET is OPEN|END, RESPONSE, DATA|END — three messages where
version 1 needs five. Either end accepts a flagged frame; each sends them only when the other
agreed to version 2 (an agent older than the platform, or the other way round, speaks 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import struct
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

HEADER = struct.Struct("!BI")
WINDOW_BYTES = 256 * 1024  # a stream's body in flight, per direction, before credit comes back
CHUNK_BYTES = 64 * 1024  # the largest DATA frame sent
MAX_HEAD_BYTES = 64 * 1024  # an OPEN, RESPONSE or HELLO payload
MAX_FRAME_BYTES = HEADER.size + max(CHUNK_BYTES, MAX_HEAD_BYTES)  # the WebSocket's max_size
MAX_STREAMS = 512  # streams open at once on one connection
SUBPROTOCOL_V2 = "edge-tunnel.v2"
END_FLAG = 0x80  # version 2: the frame also ends its side's body


class Frame(enum.IntEnum):
    OPEN = 1
    RESPONSE = 2
    DATA = 3
    END = 4
    RESET = 5
    WINDOW = 6
    HELLO = 7


class TunnelClosed(Exception):
    """The connection is gone: every stream on it fails with this."""


class StreamReset(Exception):
    """The other side gave up on the stream (its reason is the message)."""


class ProtocolError(Exception):
    """The other side broke the protocol: the connection is closed."""


class Transport(Protocol):
    """One WebSocket, as either end's library gives it."""

    async def send(self, message: bytes) -> None: ...

    async def receive(self) -> bytes:
        """The next binary message; TunnelClosed when the connection has ended."""
        ...


class Stream:
    """One HTTP exchange over the tunnel, seen from either end."""

    def __init__(self, mux: Mux, stream_id: int, head: dict[str, Any] | None = None) -> None:
        self.id = stream_id
        self.head = head  # the request (OPEN), on the side that answers it
        self._mux = mux
        # What the other side sent: body chunks, then b"" at END, or the exception that ended it.
        self._incoming: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._queued = 0  # bytes received and not read yet
        self._credit = WINDOW_BYTES  # bytes this side may still send
        self._credit_changed = asyncio.Event()
        self.response: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._sent_end = False
        self._received_end = False  # read to the end here
        self._end_arrived = False  # the other side's END has come (perhaps not read yet)
        self._failed: BaseException | None = None

    # sending -----------------------------------------------------------------------------

    async def send(self, data: bytes, *, end: bool = False) -> None:
        """Send body bytes, waiting for credit when the other side has not read enough;
        `end`: they are the last (with version 2, the last frame carries the END)."""
        view = memoryview(data)
        if end and not view:
            await self.end()
            return
        while view:
            while self._credit <= 0:
                if self._failed is not None:
                    raise self._failed
                self._credit_changed.clear()
                await self._credit_changed.wait()
            if self._failed is not None:
                raise self._failed
            size = min(len(view), CHUNK_BYTES, self._credit)
            self._credit -= size
            last = end and size == len(view)
            if last and self._mux.end_flag:
                self._sent_end = True
                await self._mux.send(Frame.DATA, self.id, bytes(view[:size]), end=True)
                self._mux.finished(self)
                return
            await self._mux.send(Frame.DATA, self.id, bytes(view[:size]))
            view = view[size:]
        if end:
            await self.end()

    async def send_all(self, chunks: AsyncIterable[bytes]) -> None:
        """Send a body that ends, and end it: each chunk is held until the next arrives, so
        the last carries the END (version 2; one message fewer). Not for bodies that may go
        on without end (a watch): their chunks must go as they come, with `send`."""
        held = b""
        async for chunk in chunks:
            if not chunk:
                continue
            if held:
                await self.send(held)
            held = chunk
        await self.send(held, end=True)

    async def end(self) -> None:
        """No more body from this side."""
        if self._sent_end or self._failed is not None:
            return
        self._sent_end = True
        await self._mux.send(Frame.END, self.id)
        self._mux.finished(self)

    async def respond(self, status: int, headers: dict[str, str]) -> None:
        """The answer's status and headers (the side answering an OPEN)."""
        await self._mux.send_json(Frame.RESPONSE, self.id, {"status": status, "headers": headers})

    async def reset(self, reason: str) -> None:
        """Give up on the exchange, telling the other side why."""
        if self._failed is not None:
            return
        self.fail(StreamReset(reason))
        with contextlib.suppress(TunnelClosed):
            await self._mux.send(Frame.RESET, self.id, reason.encode()[:1024])

    # receiving ---------------------------------------------------------------------------

    async def read(self) -> bytes:
        """The next chunk of the other side's body; b"" once it has ended."""
        if self._received_end and self._incoming.empty():
            return b""
        item = await self._incoming.get()
        if isinstance(item, BaseException):
            self._incoming.put_nowait(item)  # for any later read
            raise item
        if not item:
            self._received_end = True
            self._mux.finished(self)
            return b""
        self._queued -= len(item)
        # Read: the other side may send as much again — unless it has ended its body, as a
        # small answer's END comes right behind its one DATA (a message saved per exchange).
        if not self._end_arrived:
            with contextlib.suppress(TunnelClosed):
                await self._mux.send(Frame.WINDOW, self.id, struct.pack("!I", len(item)))
        return item

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    async def body(self, limit: int) -> bytes:
        """The whole body, refused (StreamReset) past `limit` bytes."""
        parts, size = [], 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                await self.reset(f"body larger than {limit} bytes")
                raise StreamReset(f"body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    # driven by the connection's reader ---------------------------------------------------

    def received(self, frame: Frame, payload: bytes) -> None:
        if frame is Frame.DATA:
            self._queued += len(payload)
            if self._queued > WINDOW_BYTES:
                raise ProtocolError(f"stream {self.id}: more data than the window allows")
            if payload:
                self._incoming.put_nowait(payload)
        elif frame is Frame.END:
            self._end_arrived = True
            self._incoming.put_nowait(b"")
        elif frame is Frame.WINDOW:
            if len(payload) != 4:
                raise ProtocolError(f"stream {self.id}: a WINDOW frame of {len(payload)} bytes")
            (credit,) = struct.unpack("!I", payload)
            self._credit += credit
            self._credit_changed.set()
        elif frame is Frame.RESPONSE:
            if not self.response.done():
                self.response.set_result(_json(payload))
        elif frame is Frame.RESET:
            self.fail(StreamReset(payload.decode(errors="replace") or "reset by the other side"))

    def fail(self, error: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = error
        self._incoming.put_nowait(error)
        if not self.response.done():
            self.response.set_exception(error)
            self.response.exception()  # retrieved: nobody may be waiting for it
        self._credit_changed.set()
        self._mux.forget(self)

    @property
    def done(self) -> bool:
        return self._failed is not None or (self._sent_end and self._received_end)


class Mux:
    """Streams over one transport. `answers`: this is the agent's end, which answers streams
    the platform opens (each OPEN calls `on_open` in a task of its own). `end_flag`: the other
    end speaks version 2 (the subprotocol was agreed), so frames may carry END_FLAG."""

    def __init__(
        self,
        transport: Transport,
        *,
        on_open: Callable[[Stream], Awaitable[None]] | None = None,
        on_hello: Callable[[dict[str, Any]], None] | None = None,
        end_flag: bool = False,
    ) -> None:
        self._transport = transport
        self._on_open = on_open
        self._on_hello = on_hello
        self.answers = on_open is not None
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self.end_flag = end_flag
        self._sending = asyncio.Lock()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def open(self, head: dict[str, Any], *, end: bool = False) -> Stream:
        """Start an exchange (the platform's end): the request's head is sent at once;
        `end`: the request has no body."""
        if self._closed is not None:
            raise TunnelClosed(str(self._closed))
        if len(self._streams) >= MAX_STREAMS:
            raise TunnelClosed(f"{MAX_STREAMS} exchanges are open on this connection already")
        stream = Stream(self, self._next_id)
        self._next_id += 1
        self._streams[stream.id] = stream
        if end and self.end_flag:
            stream._sent_end = True
            await self.send_json(Frame.OPEN, stream.id, head, end=True)
        else:
            await self.send_json(Frame.OPEN, stream.id, head)
            if end:
                await stream.end()
        return stream

    async def hello(self, info: dict[str, Any]) -> None:
        await self.send_json(Frame.HELLO, 0, info)

    async def send_json(
        self, frame: Frame, stream_id: int, document: dict[str, Any], *, end: bool = False
    ) -> None:
        payload = json.dumps(document, separators=(",", ":")).encode()
        if len(payload) > MAX_HEAD_BYTES:
            raise ValueError(f"a {frame.name} head is larger than {MAX_HEAD_BYTES} bytes")
        await self.send(frame, stream_id, payload, end=end)

    async def send(
        self, frame: Frame, stream_id: int, payload: bytes = b"", *, end: bool = False
    ) -> None:
        """One frame; `end` (version 2 only: the caller checks `end_flag`) flags it."""
        if self._closed is not None:
            raise TunnelClosed(str(self._closed))
        kind = frame | END_FLAG if end else frame
        async with self._sending:
            try:
                await self._transport.send(HEADER.pack(kind, stream_id) + payload)
            except TunnelClosed:
                raise
            except Exception as exc:
                raise TunnelClosed(f"sending failed: {type(exc).__name__}") from exc

    async def run(self) -> None:
        """Read frames until the connection ends; then every stream fails with TunnelClosed.
        Returns normally when the other side closed; raises ProtocolError when it broke the
        protocol (the caller closes the connection)."""
        error: BaseException = TunnelClosed("the connection ended")
        try:
            while True:
                message = await self._transport.receive()
                self._dispatch(message)
        except TunnelClosed as exc:
            error = exc
        except ProtocolError as exc:
            error = TunnelClosed(f"protocol error: {exc}")
            raise
        finally:
            self.close(error)

    def close(self, error: BaseException) -> None:
        if self._closed is not None:
            return
        self._closed = error
        for stream in list(self._streams.values()):
            stream.fail(error if isinstance(error, TunnelClosed) else TunnelClosed(str(error)))
        self._streams.clear()
        for task in self._handlers:
            task.cancel()

    async def wait_handlers(self) -> None:
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def finished(self, stream: Stream) -> None:
        if stream.done:
            self.forget(stream)

    def forget(self, stream: Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def _dispatch(self, message: bytes) -> None:
        if len(message) < HEADER.size:
            raise ProtocolError("a frame shorter than its header")
        kind, stream_id = HEADER.unpack_from(message)
        payload = message[HEADER.size :]
        try:
            frame = Frame(kind & ~END_FLAG)
        except ValueError:
            raise ProtocolError(f"unknown frame type {kind}") from None
        ends = bool(kind & END_FLAG)
        if ends and frame not in (Frame.OPEN, Frame.RESPONSE, Frame.DATA):
            raise ProtocolError(f"a {frame.name} frame cannot end a body")
        if frame is Frame.HELLO:
            if self._on_hello is not None:
                self._on_hello(_json(payload))
            return
        if frame is Frame.OPEN:
            opened = self._opened(stream_id, payload)
            if ends and opened is not None:
                opened.received(Frame.END, b"")
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream already finished or reset here: late frames are dropped
        stream.received(frame, payload)
        if ends:
            stream.received(Frame.END, b"")

    def _opened(self, stream_id: int, payload: bytes) -> Stream | None:
        """The stream the platform opened (None when refused: too many at once)."""
        if not self.answers or self._on_open is None:
            raise ProtocolError("only the platform opens streams")
        if stream_id in self._streams or stream_id == 0:
            raise ProtocolError(f"stream {stream_id} is open already")
        stream = Stream(self, stream_id, _json(payload))
        accepted: Stream | None = None
        if len(self._streams) >= MAX_STREAMS:
            task = asyncio.create_task(stream.reset("too many exchanges at once"))
        else:
            self._streams[stream_id] = stream
            accepted = stream
            task = asyncio.create_task(self._answer(stream))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        return accepted

    async def _answer(self, stream: Stream) -> None:
        assert self._on_open is not None
        try:
            await self._on_open(stream)
        except (TunnelClosed, StreamReset, asyncio.CancelledError):
            pass
        except Exception as exc:
            logger.warning("answering a tunnel exchange failed", exc_info=True)
            await stream.reset(f"the agent failed: {type(exc).__name__}")
        finally:
            self.forget(stream)


def _json(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_HEAD_BYTES:
        raise ProtocolError("a head larger than allowed")
    try:
        document = json.loads(payload)
    except ValueError:
        raise ProtocolError("a head that is not JSON") from None
    if not isinstance(document, dict):
        raise ProtocolError("a head that is not a JSON object")
    return document
