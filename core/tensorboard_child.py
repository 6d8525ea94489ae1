"""TensorBoard in a process of its own: `python -m core.tensorboard_child --logdir DIR`.

The app server proxies /tensorboard/ to this process (core/tensorboard_server.py), so TensorBoard's Python
side (its WSGI app, its plugins answering the frame's requests about every run) runs under a GIL of its own,
not the one every page's script needs. The process serves TensorBoard's WSGI app on 127.0.0.1 only, on a port
the system picks; it writes that port as one line on stdout, and serves until its stdin closes, which happens
when the app server stops or dies however it dies (even `kill -9`), so it never outlives it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"  # the app server is the only one that talks to TensorBoard's process
LOAD_FAST = "auto"  # see tensorboard_wsgi_app
# TensorBoard's index page asks for its Roboto fonts at /font-roboto/..., from the root of the host: outside its
# mount and outside any path prefix the app is served under (`--server.baseUrlPath`), where nobody serves them.
# Relative to the page they resolve under the mount, where TensorBoard serves them.
FONTS_FROM_ROOT, FONTS_FROM_PAGE = b"url(/font-roboto/", b"url(font-roboto/"
INDEX_PATHS = ("/", "/index.html")
# TensorBoard answers these with the full path of its logdir, which is the server's business, not a visitor's:
# they are answered with the folder's name instead (hide_server_paths).
LOGDIR_PATH, ENVIRONMENT_PATH = "/data/logdir", "/data/environment"
STOP_SECONDS = 10  # how long a child may take to exit after its stdin closed, before it is killed


class TensorBoardError(RuntimeError):
    """TensorBoard could not start; the message says why."""


def tensorboard_wsgi_app(logdir: Path):
    """TensorBoard's own WSGI application over `logdir`, made through its public `program` API.

    `program.TensorBoard` builds its app and hands it to a server class; ours keeps the app and listens on
    nothing: `serve` below (or a test's client) serves it.
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
            return "/"

    board = program.TensorBoard(server_class=KeepApp)
    # --load_fast=auto: TensorBoard's Rust data server (the tensorboard-data-server package) reads the event files
    # in a process of its own, and TensorBoard asks it over gRPC; without it, this process parses them itself.
    # Either way, not in the app server's process (issue 17).
    board.configure(argv=[None, "--logdir", str(logdir), "--load_fast", LOAD_FAST, "--reload_interval", "5"])
    try:
        board.launch()
    except Exception as error:  # TensorBoard raises several unrelated types for "cannot serve"
        raise TensorBoardError(f"{type(error).__name__}: {error}") from None
    return built["app"]


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


def serve(logdir: Path):
    """A threaded HTTP server on 127.0.0.1 and a free port, serving TensorBoard over `logdir` as the app shows it."""
    from werkzeug.serving import WSGIRequestHandler, make_server  # werkzeug comes with tensorboard

    class Handler(WSGIRequestHandler):
        # HTTP/1.0: every answer ends with its connection, never chunked, which keeps the app's proxy small.
        protocol_version = "HTTP/1.0"

        def log_request(self, *args):
            pass  # one line a request would flood the app server's log, which receives this process's stderr

    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # the message names the folder only: it ends up in front of a visitor
        raise TensorBoardError(f"the runs folder {logdir.name!r} cannot be made ({error.strerror})") from None
    app = hide_server_paths(fonts_from_the_page(tensorboard_wsgi_app(logdir)), logdir)
    return make_server(LOOPBACK, 0, app, threaded=True, request_handler=Handler)


@dataclass
class TensorBoardChild:
    """A running TensorBoard process and the loopback port it serves on."""

    process: subprocess.Popen
    port: int

    def alive(self) -> bool:
        """Whether the process still runs (it may have died, been killed, or exited)."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Close its stdin, which tells it to exit, and wait for it (kill it if it does not)."""
        self.process.stdin.close()
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_child(logdir: Path) -> TensorBoardChild:
    """Start TensorBoard's process over `logdir` and wait for its port (seconds: it imports TensorFlow).

    Its stderr is passed on to this process's stderr; if it exits before saying its port, its last line is the
    reason (TensorBoardError)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "core.tensorboard_child", "--logdir", str(Path(logdir).resolve())],
        cwd=REPO_ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last_line = []
    relay = threading.Thread(target=_relay_stderr, args=(process.stderr, last_line), daemon=True)
    relay.start()
    with process.stdout:
        said = process.stdout.readline().strip()
    if said.isdigit():
        return TensorBoardChild(process, int(said))
    process.stdin.close()
    code = process.wait()
    relay.join()
    raise TensorBoardError(last_line[0] if last_line else f"its process exited with code {code}")


def _relay_stderr(stream, last_line: list) -> None:
    """Copy a child's stderr to ours line by line, keeping its last non-empty line in `last_line`."""
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            if line.strip():
                last_line[:] = [line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Serve TensorBoard over --logdir until stdin closes; 1, with the reason on stderr, if it cannot start."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, required=True, help="the runs directory TensorBoard shows")
    logdir = parser.parse_args(argv).logdir.expanduser().resolve()
    report, sys.stdout = sys.stdout, sys.stderr  # stdout carries the port only; anything else goes to stderr
    try:
        server = serve(logdir)
    except TensorBoardError as error:
        print(error, file=sys.stderr)  # the last line of stderr is what the app shows
        return 1
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    threading.Thread(target=server.serve_forever, name="tensorboard-http", daemon=True).start()
    print(server.server_port, file=report, flush=True)
    report.close()
    sys.stdin.buffer.read()  # returns at end of file: the app server closed the pipe, or died
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Not sys.exit: TensorBoard's reload threads need not finish; its data server exits when our pipe to it closes.
    os._exit(code)
