"""Shared pieces of the AppTest page tests: the app's entry page and opening one of its pages."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

HOME = str(Path(__file__).resolve().parents[1] / "Home.py")
TIMEOUT = 60  # seconds for one script run: the first one to load a model also imports TensorFlow


def open_app(page: str, **query) -> AppTest:
    """Run the app (Home.py) on `page` with these query parameters; the runs directory comes from the env."""
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    if page != "Home.py":
        app.switch_page(page)
    for name, value in query.items():
        app.query_params[name] = value
    return app.run()
