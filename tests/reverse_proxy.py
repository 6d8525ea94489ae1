"""A small reverse proxy for HTTP and WebSocket, started by tests on 127.0.0.2 in front of the app on 127.0.0.1.

It forwards what a browser sends, as a proxy in front of `make run` is configured for Streamlit: the Host
header is kept (Streamlit refuses a WebSocket whose Origin does not match its Host), the visitor's address goes
into X-Forwarded-For, and Streamlit's WebSocket (with its subprotocol, which carries the XSRF token) is relayed
both ways. What the app sees is a connection from loopback to loopback: exactly the case it must never take for
the person at the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import httpx
import uvicorn
import websockets
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
WEBSOCKET_OWN = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ReverseProxy:
    """Forwards http://HOST:PORT/... to the upstream app, adding X-Forwarded-For with the client's address."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.2", upstream_host: str = "127.0.0.1"):
        self.host, self.port = host, _free_port(host)
        self.upstream = f"{upstream_host}:{upstream_port}"
        self.requests: list[str] = []  # "GET /path" of every request relayed, for tests to inspect
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address a browser opens."""
        return f"http://{self.host}:{self.port}"

    def _forwarded(self, headers, client) -> dict[str, str]:
        kept = {name: value for name, value in headers.items() if name.lower() not in HOP_BY_HOP}
        kept["host"] = headers.get("host", self.upstream)
        kept["x-forwarded-for"] = client.host if client else "unknown"
        kept["x-forwarded-proto"] = "http"
        return kept

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(Request(scope, receive), send, scope)
        elif scope["type"] == "websocket":
            await self._websocket(WebSocket(scope, receive, send))
        elif scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, request: Request, send, scope) -> None:
        self.requests.append(f"{request.method} {request.url.path}")
        url = f"http://{self.upstream}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        async with httpx.AsyncClient(timeout=60) as client:
            upstream = await client.request(request.method, url, headers=self._forwarded(request.headers, request.client),
                                            content=await request.body(), follow_redirects=False)
        headers = {name: value for name, value in upstream.headers.items() if name.lower() not in HOP_BY_HOP}
        await Response(upstream.content, status_code=upstream.status_code, headers=headers)(scope, None, send)

    async def _websocket(self, browser: WebSocket) -> None:
        self.requests.append(f"WS {browser.url.path}")
        offered = [p.strip() for p in browser.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        headers = {name: value for name, value in self._forwarded(browser.headers, browser.client).items()
                   if name.lower() not in WEBSOCKET_OWN and name.lower() != "host"}
        query = f"?{browser.url.query}" if browser.url.query else ""
        # The URI carries the browser's Host (websockets writes Host from it); the socket goes to the app.
        upstream_host, upstream_port = self.upstream.rsplit(":", 1)
        try:
            app = await websockets.connect(f"ws://{browser.headers.get('host', self.upstream)}{browser.url.path}{query}",
                                           subprotocols=offered or None, additional_headers=headers, max_size=None,
                                           open_timeout=30, host=upstream_host, port=int(upstream_port))
        except Exception:
            await browser.close(code=1011)
            return
        await browser.accept(subprotocol=app.subprotocol)

        async def browser_to_app():
            try:
                while True:
                    message = await browser.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    await app.send(message["bytes"] if message.get("bytes") is not None else message["text"])
            finally:
                await app.close()

        async def app_to_browser():
            with contextlib.suppress(websockets.ConnectionClosed, WebSocketDisconnect, RuntimeError):
                async for data in app:
                    await (browser.send_bytes(data) if isinstance(data, bytes) else browser.send_text(data))
            with contextlib.suppress(RuntimeError):
                await browser.close()

        await asyncio.gather(browser_to_app(), app_to_browser(), return_exceptions=True)

    def start(self) -> "ReverseProxy":
        """Serve on a thread of this process; returns once the port answers."""
        config = uvicorn.Config(self, host=self.host, port=self.port, log_level="warning", lifespan="on", ws="websockets")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="reverse-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the reverse proxy did not start on {self.url}")

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
