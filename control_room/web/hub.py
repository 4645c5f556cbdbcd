"""Server-sent events to every open page: one queue per page, filled from any thread.

Why SSE and not a WebSocket: updates flow one way (commands go by POST through the control
room's own command functions), ``EventSource`` reconnects by itself, and plain uvicorn needs no
WebSocket library for it.

Each event is encoded once, then handed to the server's event loop with one
``call_soon_threadsafe`` whatever the number of pages, so the thread that published it (a module's
watcher, a macro step) never waits for a browser. A page that stops reading is cut off once it is
``MAX_QUEUED`` events behind; its ``EventSource`` reconnects and starts again from a fresh
snapshot. Plot frames are the exception: a slow page skips the oldest ones (drop-oldest), so a
live plot can never hold up status, replies or logs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

MAX_QUEUED = 5000  # events a page may fall behind before it is cut off (it reconnects)
MAX_PLOT_FRAMES = 8  # plot frames kept per page and plot; older ones are dropped
KEEPALIVE_S = 15.0
RETRY_MS = 1000  # how soon EventSource reconnects after a drop


def encode(event: str, data: Any) -> bytes:
    """One SSE message (JSON never holds a raw newline, so one ``data:`` line is enough)."""
    body = json.dumps(data, default=str, separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


class Client:
    """One open page: its queue, its plots, and whether it should end."""

    def __init__(self, cid: str) -> None:
        self.id = cid
        self.queue: deque[tuple[str | None, bytes]] = deque()  # (plot key or None, message)
        self.plot_frames: dict[str, int] = {}  # plot key -> frames queued
        self.wake = asyncio.Event()
        self.closed = False

    def put(self, msg: bytes, plot: str | None = None) -> None:
        if self.closed:
            return
        if plot is not None:
            n = self.plot_frames.get(plot, 0)
            if n >= MAX_PLOT_FRAMES:
                self._drop_oldest_frame(plot)
            else:
                self.plot_frames[plot] = n + 1
        elif len(self.queue) >= MAX_QUEUED:
            self.close()  # too far behind: it reconnects and resyncs from a snapshot
            return
        self.queue.append((plot, msg))
        self.wake.set()

    def _drop_oldest_frame(self, plot: str) -> None:
        for i, (key, _) in enumerate(self.queue):
            if key == plot:
                del self.queue[i]
                return

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Hub:
    """The set of open pages; thread-safe entry points end in ``_threadsafe`` or ``broadcast``."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: dict[str, Client] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self.on_count: Callable[[int], None] | None = None  # pages open changed (monitor)
        self.on_leave: Callable[[str], None] | None = None  # a page left (its plots close)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # -- from any thread ---------------------------------------------------------------------
    def broadcast(self, event: str, data: Any) -> None:
        """Send ``event`` to every open page."""
        if self.loop is None or not self.clients:
            return
        msg = encode(event, data)
        self._call(self._fanout, msg, None, None)

    def send_plot(self, key: str, ids: list[str], frame: dict[str, Any]) -> None:
        """Send one plot frame to the pages ``ids`` (drop-oldest per page)."""
        if self.loop is None or not ids:
            return
        self._call(self._fanout, encode("plot", frame), key, ids)

    def send_to(self, cid: str, event: str, data: Any) -> None:
        self._call(self._fanout, encode(event, data), None, [cid])

    def drop_all(self) -> None:
        """End every event stream now (shutdown; tests of reconnection). Pages reconnect."""
        self._call(self._drop)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    # -- on the event loop -------------------------------------------------------------------
    def _fanout(self, msg: bytes, plot: str | None, ids: list[str] | None) -> None:
        targets = self.clients.values() if ids is None else (self.clients.get(i) for i in ids)
        for c in list(targets):
            if c is not None:
                c.put(msg, plot)

    def _drop(self) -> None:
        for c in list(self.clients.values()):
            c.close()

    def stop(self) -> None:
        self._stopping = True
        self.drop_all()

    def register(self) -> Client:
        c = Client(f"p{next(self._ids)}")
        self.clients[c.id] = c
        self._count_changed()
        return c

    def unregister(self, c: Client) -> None:
        c.closed = True
        if self.clients.pop(c.id, None) is not None:
            if self.on_leave is not None:
                self.on_leave(c.id)
            self._count_changed()

    def _count_changed(self) -> None:
        if self.on_count is not None:
            self.on_count(len(self.clients))

    async def stream(self, c: Client, first: bytes) -> AsyncIterator[bytes]:
        """The bytes of one page's event stream: retry hint, snapshot, then events as they come."""
        try:
            yield f"retry: {RETRY_MS}\n\n".encode() + first
            while not c.closed and not self._stopping:
                if not c.queue:
                    c.wake.clear()
                    try:
                        await asyncio.wait_for(c.wake.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                batch = []
                while c.queue and len(batch) < 200:
                    plot, msg = c.queue.popleft()
                    if plot is not None:
                        c.plot_frames[plot] -= 1
                    batch.append(msg)
                if batch:
                    yield b"".join(batch)
        finally:
            self.unregister(c)
