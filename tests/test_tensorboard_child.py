"""TensorBoard in its own process (core/tensorboard_child.py) behind the app's /tensorboard/ proxy
(core/tensorboard_server.py): real TensorBoard processes over a tiny runs directory of one event file.

The app's pages through the proxy, over real trained runs: test_pages.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.summary import Writer

from core.tensorboard_server import MAX_BODY_BYTES, TensorBoardMount

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD_MODULE = "core.tensorboard_child"
EXIT_WAIT_SECONDS = 60  # a bound on waiting for a process to exit, never a measure of speed
LISTEN = "0A"  # a listening socket's state in /proc/net/tcp
# A parent that starts TensorBoard's process, says its pid, and waits to be killed.
PARENT = """
import sys, time
from core.tensorboard_child import start_child
print(start_child(sys.argv[1]).process.pid, flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A runs directory holding one run folder with one event file of three loss points."""
    runs = tmp_path_factory.mktemp("tiny") / "runs"
    writer = Writer(str(runs / "run-a"))
    for step in range(3):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.close()
    return runs


def request(path: str) -> tuple[dict, list]:
    """A GET as Starlette passes it to an app mounted at /tensorboard, and the list the answer goes into."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/tensorboard" + path, "raw_path": ("/tensorboard" + path).encode(),
             "root_path": "/tensorboard", "query_string": b"", "headers": [(b"host", b"127.0.0.1:8501")],
             "server": ("127.0.0.1", 8501), "client": ("127.0.0.1", 50000)}
    return scope, []


async def get(mount, path: str) -> tuple[int, bytes]:
    scope, sent = request(path)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await mount(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


async def get_all(mount, *paths: str) -> list[tuple[int, bytes]]:
    return await asyncio.gather(*(get(mount, path) for path in paths))


def children_over(logdir: Path) -> list[int]:
    """Pids of the TensorBoard processes running over `logdir` (zombies, already exited, left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            exited = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            continue
        if CHILD_MODULE.encode() in command and str(logdir.resolve()).encode() in command and not exited:
            pids.append(int(entry.name))
    return pids


def children_of(pid: int) -> list[int]:
    """Pids of the processes whose parent is `pid` (TensorBoard's data server, for TensorBoard's process)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return children


def listening_addresses(pid: int) -> list[str]:
    """The local addresses ("127.0.0.1:port") on which process `pid` listens for TCP connections."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        found = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        if found:
            inodes.add(found[1])
    addresses = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == LISTEN:
                host, port = fields[1].split(":")
                shown = ".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)) if len(host) == 8 else host
                addresses.append(f"{shown}:{int(port, 16)}")
    return addresses


def wait_for_exit(pids: list[int]) -> list[int]:
    """The pids still running after waiting up to EXIT_WAIT_SECONDS for them to exit."""
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    running = pids
    while running and time.monotonic() < deadline:
        time.sleep(0.2)
        running = [pid for pid in running if Path(f"/proc/{pid}").exists()
                   and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    return running


def test_requests_at_once_start_one_tensorboard_that_shows_the_folder_name_and_fonts_under_the_mount(runs_dir):
    mount = TensorBoardMount(runs_dir)
    try:
        answers = asyncio.run(get_all(mount, "/", "/data/logdir", "/data/environment", "/data/runs"))

        assert [status for status, _ in answers] == [200] * 4, answers
        (_, page), (_, logdir), (_, environment), _ = answers
        fonts = set(re.findall(rb"url\(([^)]+\.woff2)\)", page))
        assert fonts and all(font.startswith(b"font-roboto/") for font in fonts), sorted(fonts)[:3]
        assert json.loads(logdir) == {"logdir": "runs"}
        assert json.loads(environment)["data_location"] == "runs"
        assert str(runs_dir).encode() not in logdir + environment
        (pid,) = children_over(runs_dir)  # one process, for four requests that found none running
        # Only loopback: the app server is the one client; visitors come through its port.
        addresses = listening_addresses(pid)
        assert addresses and all(address.startswith("127.0.0.1:") for address in addresses), addresses
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        while (runs := json.loads(asyncio.run(get(mount, "/data/runs"))[1])) == [] and time.monotonic() < deadline:
            time.sleep(0.5)  # TensorBoard reads the logs on a reload cycle of its own
        assert runs == ["run-a"]
    finally:
        mount.stop()
    assert children_over(runs_dir) == []


def test_a_request_body_past_the_limit_is_refused_in_words_before_it_is_held(runs_dir):
    # A visitor posting a gigabyte at /tensorboard/ must not make the app server hold it: the proxy stops reading
    # at MAX_BODY_BYTES and says so; a small post still reaches TensorBoard.
    mount = TensorBoardMount(runs_dir)
    parts = iter([b"x" * (1 << 20)] * (MAX_BODY_BYTES // (1 << 20) + 2))
    read = []

    async def receive():
        part = next(parts)
        read.append(part)
        return {"type": "http.request", "body": part, "more_body": True}

    async def post():
        scope, sent = request("/data/plugin/timeseries/timeSeries")
        scope["method"] = "POST"

        async def send(message):
            sent.append(message)

        await mount(scope, receive, send)
        return sent

    try:
        sent = asyncio.run(post())

        assert sent[0]["status"] == 413
        assert b"at most 4 MB" in sent[1]["body"]
        assert len(read) == MAX_BODY_BYTES // (1 << 20) + 1  # not one part past the limit
    finally:
        mount.stop()


def test_a_tensorboard_that_died_is_started_again(runs_dir):
    mount = TensorBoardMount(runs_dir)
    try:
        assert asyncio.run(get(mount, "/data/logdir"))[0] == 200
        (first,) = children_over(runs_dir)
        os.kill(first, signal.SIGKILL)
        assert wait_for_exit([first]) == []

        status, body = asyncio.run(get(mount, "/data/logdir"))

        assert (status, json.loads(body)) == (200, {"logdir": "runs"})
        (second,) = children_over(runs_dir)
        assert second != first
    finally:
        mount.stop()


def test_a_request_given_up_while_tensorboard_starts_leaves_the_start_to_the_others(runs_dir):
    mount = TensorBoardMount(runs_dir)

    async def give_up_then_ask():
        given_up = asyncio.create_task(get(mount, "/data/logdir"))
        await asyncio.sleep(0)  # it asked, and waits for TensorBoard's process to start
        given_up.cancel()  # as when the visitor leaves the page
        return await get(mount, "/data/logdir")

    try:
        status, body = asyncio.run(give_up_then_ask())

        assert (status, json.loads(body)) == (200, {"logdir": "runs"})
        assert len(children_over(runs_dir)) == 1
    finally:
        mount.stop()


def test_tensorboard_exits_with_the_app_server_even_when_it_is_killed(runs_dir):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(runs_dir)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    with parent.stdout:
        child = int(parent.stdout.readline())
    assert children_over(runs_dir) == [child]
    data_servers = children_of(child)  # TensorBoard's Rust data server, when it has one

    parent.kill()  # SIGKILL: no clean-up of its own runs
    parent.wait()

    assert wait_for_exit([child, *data_servers]) == []
