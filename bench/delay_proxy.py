"""A TCP proxy on 127.0.0.1 that holds every chunk for a fixed time each way: a far host for
benches on one machine (20 ms round trip = 10 ms each way). Bandwidth is not limited, order is
kept, and each direction is pipelined (a chunk's delay does not hold back the next one's read).

    with DelayProxy(target_port=2222, one_way_s=0.010) as proxy:
        ... connect to 127.0.0.1:proxy.port ...
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType


class DelayProxy:
    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target_port, self.delay = target_port, one_way_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except asyncio.CancelledError:  # shutting down: end quietly (asyncio logs a cancelled
            writer.close()  # connection handler as an error)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    w.close()
                    return
                w.write(data)
                await w.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await r.read(1 << 16):
                queue.put_nowait((loop.time() + self.delay, data))
        except ConnectionError:
            pass
        queue.put_nowait((loop.time() + self.delay, b""))
        try:
            await sender
        except ConnectionError:
            pass
