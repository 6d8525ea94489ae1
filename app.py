"""The app's entry point: `streamlit run app.py` serves Home.py, the pages in pages/ and TensorBoard through one
server, one port and one origin.

Streamlit finds `app` below and serves it as an ASGI application. Home.py is the main page, so the sidebar
labels it "Home"; the pages/ folder beside it gives the other pages, in file-name order. TensorBoard is
mounted under /tensorboard/, so the TensorBoard page works from any browser that can open the app. At start
the training service's warm workers start (core/service.py); when the server stops, they stop their runs
(kept as "stopped") and exit, and queued runs wait in the runs directory for the next start. TensorBoard runs
in a process of its own, started by the first request under /tensorboard/ and stopped with the server.
"""

from contextlib import asynccontextmanager

import streamlit as st
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route

from core import service
from core.store import default_runs_dir
from core.tensorboard_server import MOUNT_PATH, TensorBoardMount


@asynccontextmanager
async def lifespan(app):
    # The server owns the pool: its workers warm up while the first visitor reads the home page, and stop
    # (keeping their runs as "stopped") when it stops.
    try:
        with service.serving(default_runs_dir()):
            yield
    finally:
        tensorboard.stop()


async def tensorboard_slash(request):
    return RedirectResponse(MOUNT_PATH + "/", status_code=308)


tensorboard = TensorBoardMount(default_runs_dir())
app = st.App(
    "Home.py",
    lifespan=lifespan,
    routes=[Route(MOUNT_PATH, tensorboard_slash), Mount(MOUNT_PATH, app=tensorboard)],
)
