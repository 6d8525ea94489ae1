"""The direction of imports: pages call core, core never imports streamlit, and what the home page needs from
core does not pull in TensorFlow (a ~5 s import the first paint must not wait for)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE_FILES = sorted((REPO_ROOT / "core").glob("*.py"))
# What the home page and the CLI's flag checking import before any training starts.
LIGHT_MODULES = ["core.config", "core.data", "core.runs", "core.training", "core.train", "core.report"]
HEAVY_PACKAGES = ["tensorflow", "keras", "tf_keras"]


def imported_packages(source: str) -> set[str]:
    """Top-level package names of every import statement in a module, wherever it sits (functions too)."""
    packages = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


def test_the_import_finder_sees_every_form_of_import():
    source = "import streamlit as st\nfrom streamlit.testing import AppTest\ndef page():\n    import plotly.express\n"

    assert imported_packages(source) == {"streamlit", "plotly"}
    assert imported_packages('"""No streamlit here."""\nimport numpy\n') == {"numpy"}


def test_core_never_imports_streamlit():
    assert REPO_ROOT / "core" / "config.py" in CORE_FILES and len(CORE_FILES) >= 8

    offenders = [path.name for path in CORE_FILES if "streamlit" in imported_packages(path.read_text())]

    assert offenders == [], f"core modules importing streamlit: {offenders}; move the UI part to pages/"


def test_home_page_modules_do_not_import_tensorflow():
    probe = (
        "import json, sys, tempfile\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    __import__(name)\n"
        "from core.data import describe_default_source\n"
        "from core.runs import list_runs\n"
        "describe_default_source('mnist'); describe_default_source('fashion_mnist')\n"
        "list_runs(tempfile.mkdtemp())\n"
        f"print(json.dumps(sorted(name for name in {HEAVY_PACKAGES!r} if name in sys.modules)))\n"
    )

    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

