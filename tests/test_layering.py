"""The direction of imports, in three layers: pages (and Home.py, app.py) lay out widgets; `ui` supports the
pages and may import streamlit; `core` is the domain and imports neither streamlit nor `ui`. What the home
page needs does not pull in TensorFlow (a ~5 s import the first paint must not wait for)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE_FILES = sorted((REPO_ROOT / "core").rglob("*.py"))
PAGE_FILES = [REPO_ROOT / "Home.py", REPO_ROOT / "app.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]
BENCH_FILES = sorted((REPO_ROOT / "bench").glob("*.py"))
# What the home page and the CLI's flag checking import before any training starts.
# The server imports the training service, its queue and the TensorBoard mount at start (app.py), so they must
# not pull in TensorFlow either: the workers and TensorBoard's first request pay for it instead.
LIGHT_MODULES = ["core.access", "core.config", "core.data", "core.records", "core.run_files", "core.run_folder", "core.store",
                 "core.processes", "core.cli", "core.worker", "core.advice", "core.network",
                 "core.engines", "core.service", "core.queue", "core.tensorboard_server", "core.tensorboard_child",
                 "core.sweeps", "core.insight",
                 "core.export_script", "core.links", "ui.texts", "ui.outcomes"]
HEAVY_PACKAGES = ["tensorflow", "keras", "tf_keras"]


def imported_modules(source: str) -> set[str]:
    """Dotted names of every absolute import statement in a module, wherever it sits (functions too)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def imported_packages(source: str) -> set[str]:
    """Top-level package names of every import statement in a module."""
    return {name.split(".")[0] for name in imported_modules(source)}


def test_the_import_finder_sees_every_form_of_import():
    source = "import streamlit as st\nfrom streamlit.testing import AppTest\ndef page():\n    import plotly.express\n"

    assert imported_packages(source) == {"streamlit", "plotly"}
    assert imported_packages('"""No streamlit here."""\nimport numpy\n') == {"numpy"}
    assert imported_modules("from ui import texts\nimport core.runs\n") == {"ui", "core.runs"}


def test_core_imports_neither_streamlit_nor_the_page_support_package():
    assert REPO_ROOT / "core" / "config.py" in CORE_FILES and REPO_ROOT / "core" / "engines" / "session.py" in CORE_FILES

    offenders = {path.relative_to(REPO_ROOT).as_posix(): sorted({"streamlit", "ui"} & imported_packages(path.read_text()))
                 for path in CORE_FILES}

    assert {name: found for name, found in offenders.items() if found} == {}, "move the UI part to ui/"


def test_pages_hold_no_training_logic_of_their_own():
    """Pages call core and ui; they never reach into an engine or the training loop directly."""
    reaching_in = {path.name: sorted(name for name in imported_modules(path.read_text())
                                     if name.startswith(("core.engines", "core.training", "tensorflow", "keras")))
                   for path in PAGE_FILES}

    assert {name: found for name, found in reaching_in.items() if found} == {}


def test_benchmarks_do_not_import_the_tests():
    offenders = [path.name for path in BENCH_FILES if "tests" in imported_packages(path.read_text())]

    assert offenders == []


def test_home_page_modules_do_not_import_tensorflow():
    probe = (
        "import json, sys, tempfile\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    __import__(name)\n"
        "from core.data import describe_default_source\n"
        "from core.store import list_runs\n"
        "describe_default_source('mnist'); describe_default_source('fashion_mnist')\n"
        "list_runs(tempfile.mkdtemp())\n"
        f"print(json.dumps(sorted(name for name in {HEAVY_PACKAGES!r} if name in sys.modules)))\n"
    )

    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# String methods and operators that read meaning out of text.
TEXT_READERS = {"partition", "rpartition", "startswith", "endswith", "split", "rsplit", "find", "rfind", "index",
                "removeprefix", "removesuffix", "replace", "count"}


def message_readers(source: str) -> list[str]:
    """Every place a module searches a run's message (or an error's text) for meaning, as source text."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TEXT_READERS:
            if "message" in ast.unparse(node.func.value):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if any("message" in ast.unparse(side) for side in node.comparators):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.value is not None:
            if ast.unparse(node.func.value) == "re" and any("message" in ast.unparse(arg) for arg in node.args):
                found.append(ast.unparse(node))
    return found


def test_the_message_finder_sees_the_ways_text_is_searched():
    source = ("a = run.message.partition('did not learn: ')[2]\nb = message.startswith('stopped at step')\n"
              "c = 'server' in run.message\nd = re.search('x', status.message)\ne = run.message or 'none'\n")

    assert len(message_readers(source)) == 4


def test_pages_and_ui_word_how_a_run_ended_from_fields_never_from_a_message():
    """Reasons are data: why a run stopped, the advice and the kind of failure are fields of its status."""
    files = [*PAGE_FILES, *sorted((REPO_ROOT / "ui").glob("*.py"))]

    offenders = {path.relative_to(REPO_ROOT).as_posix(): message_readers(path.read_text()) for path in files}

    assert {name: found for name, found in offenders.items() if found} == {}
