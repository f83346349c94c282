"""Slow and half-open HTTP clients: the load an unauthenticated attacker can put on the console.

Example:

    with SlowClients("127.0.0.1", port, n=200) as load:   # 200 connections held open
        ...                                               # the e-stop API must still answer
    load.opened, load.dropped                             # connections made, cut by the server

Half of the connections send a request line and stop (headers never end); the other half
trickle one header byte per second (slowloris). A connection the server cuts is opened again,
so the load stays at `n` for as long as the block runs. Used by `fleet bench estop_latency
--half-open N` and tests/test_console_load.py.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class SlowClients:
    def __init__(self, host: str, port: int, n: int = 200, trickle_s: float = 1.0) -> None:
        self.host, self.port, self.n, self.trickle_s = host, port, n, trickle_s
        self.opened = 0  # connections made (including reopened ones)
        self.dropped = 0  # connections the server closed
        self.refused = 0  # connect() failures
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="slow-clients")
        self._ready = threading.Event()

    def __enter__(self) -> SlowClients:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _open(self, i: int) -> socket.socket | None:
        try:
            s = socket.create_connection((self.host, self.port), timeout=2)
        except OSError:
            self.refused += 1
            return None
        self.opened += 1
        s.setblocking(False)
        with contextlib.suppress(OSError):
            s.send(b"POST /api/fleet/estop HTTP/1.1\r\nHost: 127.0.0.1\r\n" if i % 2
                   else b"GET /api/robots HTTP/1.1\r\n")
        return s

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        socks: dict[int, socket.socket | None] = {}
        for i in range(self.n):
            socks[i] = s = self._open(i)
            if s is not None:
                sel.register(s, selectors.EVENT_READ, i)
        self._ready.set()
        next_trickle = time.monotonic() + self.trickle_s
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):  # readable: the server answered or closed
                conn, i = key.fileobj, key.data
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.dropped += 1
                    sel.unregister(conn)
                    conn.close()
                    socks[i] = None
            if time.monotonic() >= next_trickle:
                next_trickle += self.trickle_s
                for i, s in list(socks.items()):
                    if s is None:
                        socks[i] = s = self._open(i)
                        if s is not None:
                            sel.register(s, selectors.EVENT_READ, i)
                    elif i % 2:  # slowloris: one more header byte, never the blank line
                        with contextlib.suppress(OSError):
                            s.send(b"X")
        for s in socks.values():
            if s is not None:
                sel.unregister(s)
                s.close()
        sel.close()
