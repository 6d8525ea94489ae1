"""TensorBoard over the runs directory, served by the app's own server under /tensorboard/.

Every run folder is a TensorBoard run (the engines write their event files there), so TensorBoard pointed at
the runs directory shows them all side by side, exactly as `tensorboard --logdir runs` would. It is served
through the app's one port and origin, so the TensorBoard page works from any browser that can open the app
(a lab server, a port-forwarded VM), not only from the machine itself: app.py mounts `TensorBoardMount`.
TensorBoard imports TensorFlow, so it is built on the first request, not when the server starts.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import threading
from pathlib import Path
from urllib.parse import quote

MOUNT_PATH = "/tensorboard"
# The TensorBoard 2.x frontend reads these from the URL's query string (its deep-link provider keeps the
# run filter, tag filter and smoothing there); the hash picks the dashboard.
DASHBOARD = "timeseries"
RUN_FILTER_PARAMETER = "runFilter"
_REGEX_SPECIALS = set(".^$*+?()[]{}|\\")
# TensorBoard's index page asks for its Roboto fonts at /font-roboto/..., from the root of the host: outside its
# mount and outside any path prefix the app is served under (`--server.baseUrlPath`), where nobody serves them.
# Relative to the page they resolve under the mount, where TensorBoard serves them.
LOAD_FAST = "auto"  # see tensorboard_wsgi_app
FONTS_FROM_ROOT, FONTS_FROM_PAGE = b"url(/font-roboto/", b"url(font-roboto/"
INDEX_PATHS = ("/", "/index.html")
# TensorBoard answers these with the full path of its logdir, which is the server's business, not a visitor's:
# they are answered with the folder's name instead (hide_server_paths).
LOGDIR_PATH, ENVIRONMENT_PATH = "/data/logdir", "/data/environment"


class TensorBoardError(RuntimeError):
    """TensorBoard could not start; the message says why."""


def tensorboard_wsgi_app(logdir: Path):
    """TensorBoard's own WSGI application over `logdir`, made through its public `program` API.

    `program.TensorBoard` builds its app and hands it to a server class; ours keeps the app and listens on
    nothing, because the app's server serves it.
    """
    try:
        from tensorboard import program  # deferred: TensorBoard imports TensorFlow when it is installed
    except ImportError as error:
        raise TensorBoardError(f"the tensorboard package is not installed ({error}); pip install tensorboard") \
            from None
    built = {}

    class KeepApp(program.TensorBoardServer):
        def __init__(self, wsgi_app, flags):
            built["app"] = wsgi_app

        def serve_forever(self):
            pass

        def get_url(self):
            return MOUNT_PATH + "/"

    board = program.TensorBoard(server_class=KeepApp)
    # --load_fast=auto: TensorBoard's Rust data server (the tensorboard-data-server package) reads the event files
    # in a process of its own, and TensorBoard asks it over gRPC. In this process instead, TensorBoard's
    # multiplexer would parse them under the GIL that every page of the app shares: with 600 runs, 30 s of one
    # core after the first visit, during which every page of the app was slow (issue 17). Where there is no
    # data server, or it cannot start, TensorBoard falls back to reading them here.
    board.configure(argv=[None, "--logdir", str(logdir), "--load_fast", LOAD_FAST, "--reload_interval", "5"])
    try:
        board.launch()
    except Exception as error:  # TensorBoard raises several unrelated types for "cannot serve"
        raise TensorBoardError(f"{type(error).__name__}: {error}") from None
    return built["app"]


class TensorBoardMount:
    """An ASGI app for the /tensorboard/ mount: TensorBoard's WSGI app, built on the first request."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir).expanduser().resolve()
        self._asgi = None
        self._lock = threading.Lock()

    def _build(self):
        with self._lock:
            if self._asgi is None:
                from a2wsgi import WSGIMiddleware

                self.logdir.mkdir(parents=True, exist_ok=True)
                board = tensorboard_wsgi_app(self.logdir)
                self._asgi = WSGIMiddleware(hide_server_paths(fonts_from_the_page(board), self.logdir))
        return self._asgi

    async def __call__(self, scope, receive, send):
        try:
            app = self._asgi or await asyncio.to_thread(self._build)
        except (TensorBoardError, OSError) as error:
            await _respond(send, 503, f"TensorBoard could not start here: {error}".encode(),
                           [(b"content-type", b"text/plain; charset=utf-8")])
            return
        await app(scope, receive, send)


def _whole_answer(wsgi_app, environ) -> tuple[str, list, bytes]:
    """Call a WSGI app and keep its whole answer: status, headers (without Content-Length) and body."""
    answer = {}

    def keep(status, headers, exc_info=None):
        answer.update(status=status, headers=headers)
        return lambda data: None  # TensorBoard (werkzeug) returns its body rather than write() it

    body = wsgi_app(environ, keep)
    try:
        content = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    headers = [(name, value) for name, value in answer["headers"] if name.lower() != "content-length"]
    return answer["status"], headers, content


def fonts_from_the_page(wsgi_app):
    """TensorBoard's WSGI app, with its index page asking for its fonts relative to itself (see FONTS_FROM_ROOT)."""
    def app(environ, start_response):
        if environ.get("PATH_INFO") not in INDEX_PATHS:
            return wsgi_app(environ, start_response)
        status, headers, page = _whole_answer(wsgi_app, environ)
        page = page.replace(FONTS_FROM_ROOT, FONTS_FROM_PAGE)
        start_response(status, headers + [("Content-Length", str(len(page)))])
        return [page]

    return app


def hide_server_paths(wsgi_app, logdir: Path):
    """TensorBoard's WSGI app, with the two answers that name its logdir naming only the folder (see LOGDIR_PATH):
    a visitor learns "runs", not where the server keeps it."""
    shown = Path(logdir).name

    def app(environ, start_response):
        path = environ.get("PATH_INFO")
        if path == LOGDIR_PATH:
            values = {"logdir": shown}
        elif path == ENVIRONMENT_PATH:
            plain = {**environ, "HTTP_ACCEPT_ENCODING": "identity"}  # a gzipped answer could not be read here
            status, headers, content = _whole_answer(wsgi_app, plain)
            try:
                values = json.loads(content)
            except ValueError:  # not TensorBoard's usual answer: say nothing rather than pass it on
                values = {}
            if not isinstance(values, dict) or not status.startswith("200"):
                values = {}
            values = {key: value for key, value in values.items() if key != "debug"}
            values["data_location"] = shown
        else:
            return wsgi_app(environ, start_response)
        content = json.dumps(values).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(content)))])
        return [content]

    return app


async def _respond(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
