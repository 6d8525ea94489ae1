"""TensorBoard over the runs directory, served through the app's own server under /tensorboard/.

Every run folder is a TensorBoard run (the engines write their event files there), so TensorBoard pointed at
the runs directory shows them all side by side, exactly as `tensorboard --logdir runs` would. It is served
through the app's one port and origin, so the TensorBoard page works from any browser that can open the app
(a lab server, a port-forwarded VM), not only from the machine itself: app.py mounts `TensorBoardMount`, a
small reverse proxy to TensorBoard's own process (core/tensorboard_child.py) on a loopback port. In a process
of its own, TensorBoard's Python side answers the frame's requests about 600 runs without holding the GIL that
every page's script needs. It imports TensorFlow, so it is started on the first request, not when the server
starts, and started again if it died.
"""

from __future__ import annotations

import asyncio
import shlex
import threading
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import quote

from core.tensorboard_child import LOOPBACK, TensorBoardChild, TensorBoardError, start_child

MOUNT_PATH = "/tensorboard"
# The TensorBoard 2.x frontend reads these from the URL's query string (its deep-link provider keeps the
# run filter, tag filter and smoothing there); the hash picks the dashboard.
DASHBOARD = "timeseries"
RUN_FILTER_PARAMETER = "runFilter"
_REGEX_SPECIALS = set(".^$*+?()[]{}|\\")
# Headers that describe one connection, not the request or answer: the proxy's two connections have their own.
# Host and Content-Length are written afresh for the request to TensorBoard's process.
REQUEST_HEADERS_DROPPED = {b"connection", b"keep-alive", b"proxy-authorization", b"proxy-connection", b"te",
                           b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length"}
ANSWER_HEADERS_DROPPED = {b"connection", b"keep-alive", b"transfer-encoding", b"server", b"date"}
CHUNK_BYTES = 64 * 1024
# TensorBoard's frontend posts small JSON queries (a few kilobytes for hundreds of runs); a body past this is
# refused before it is held in memory.
MAX_BODY_BYTES = 4 * 1024 * 1024


class TensorBoardMount:
    """An ASGI app for the /tensorboard/ mount: a reverse proxy to TensorBoard's process, started on the first
    request (once, however many requests arrive while it starts) and again after it died."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir).expanduser().resolve()
        self._lock = threading.Lock()
        self._started: Future | None = None  # a concurrent Future: awaited from any event loop

    def _child(self) -> Future:
        """The running (or starting) child, or a start of a new one when there is none or it died."""
        with self._lock:
            started = self._started
            if started is None or (started.done() and (started.exception() or not started.result().alive())):
                started = self._started = Future()
                # Running, so that a request cancelled while it waits (asyncio.wrap_future passes the cancel on)
                # cannot cancel the start that the other requests, and the next ones, wait for.
                started.set_running_or_notify_cancel()
                threading.Thread(target=self._start, args=(started,), name="tensorboard-start", daemon=True).start()
            return started

    def _start(self, started: Future) -> None:
        try:
            started.set_result(start_child(self.logdir))
        except BaseException as error:  # every waiting request must hear of it, whatever it is
            started.set_exception(error)

    def stop(self) -> None:
        """Stop TensorBoard's process, once started if it is starting (the next request starts it again)."""
        with self._lock:
            started, self._started = self._started, None
        if started is not None and not started.exception():
            started.result().stop()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        try:
            child: TensorBoardChild = await asyncio.wrap_future(self._child())
        except (TensorBoardError, OSError) as error:
            await _respond(send, 503, f"TensorBoard could not start here: {error}")
            return
        body = await _request_body(receive)
        if body is None:
            await _respond(send, 413, f"A request to TensorBoard may carry at most {MAX_BODY_BYTES // 2**20} MB.")
            return
        writer = None
        try:
            reader, writer = await asyncio.open_connection(LOOPBACK, child.port)
            writer.write(_request_head(scope, child.port, len(body)) + body)
            await writer.drain()
            status, headers = _answer_head(await reader.readuntil(b"\r\n\r\n"))
        except (OSError, asyncio.IncompleteReadError) as error:  # it died just now: the next request restarts it
            if writer is not None:
                writer.close()
            await _respond(send, 503, f"TensorBoard stopped answering here ({error}); reload to start it again")
            return
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            # HTTP/1.0: the answer's body ends when TensorBoard's process closes the connection.
            while chunk := await reader.read(CHUNK_BYTES):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            writer.close()


async def _request_body(receive) -> bytes | None:
    """The request's body, or None once it passes MAX_BODY_BYTES (the rest is not read)."""
    parts, size = [], 0
    while True:
        message = await receive()
        part = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(part)
        if not message.get("more_body"):
            return b"".join(parts)


def _request_head(scope, port: int, body_length: int) -> bytes:
    """The request line and headers for TensorBoard's process: the path under the mount, the headers that
    describe the request (not the connection), its own Host."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    target = quote(path or "/") + (f"?{scope['query_string'].decode('latin-1')}" if scope["query_string"] else "")
    headers = [(name, value) for name, value in scope["headers"] if name.lower() not in REQUEST_HEADERS_DROPPED]
    headers += [(b"host", f"{LOOPBACK}:{port}".encode()), (b"content-length", str(body_length).encode())]
    head = f"{scope['method']} {target} HTTP/1.0\r\n".encode("latin-1")
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"


def _answer_head(head: bytes) -> tuple[int, list]:
    """The status and the headers to pass on, from the head of TensorBoard's answer."""
    status_line, *lines = head.split(b"\r\n")[:-2]
    headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines]
    return int(status_line.split()[1]), [(name.lower(), value) for name, value in headers
                                         if name.lower() not in ANSWER_HEADERS_DROPPED]


async def _respond(send, status: int, sentence: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": sentence.encode()})


def run_filter(run_id: str) -> str:
    """A TensorBoard run-filter regex matching exactly this run's name (and nothing else it is a prefix of)."""
    escaped = "".join(f"\\{char}" if char in _REGEX_SPECIALS else char for char in run_id)
    return f"^{escaped}$"


def dashboard_url(run_id: str | None = None, base_url: str = MOUNT_PATH + "/") -> str:
    """The time-series dashboard of the app's TensorBoard, showing only `run_id` when one is given."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    query = f"?{RUN_FILTER_PARAMETER}={quote(run_filter(run_id), safe='')}" if run_id else ""
    return f"{base}{query}#{DASHBOARD}"


def tensorboard_command(logdir: Path) -> str:
    """The shell command that shows the same thing from a terminal."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))}"
