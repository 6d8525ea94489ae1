"""Whether sign-in can work: the `[auth]` section of the secrets, Authlib, and the provider's answer, each
problem in one sentence for the page and once in the server log.

core/access.py decides who someone is; this module says what keeps the sign-in mode from working, so that a
broken configuration is said in plain words and lets nobody in (access.identify with auth_broken). The
provider is asked over the network, so its answer is kept a while (sign_in_problem): a working one for
PROVIDER_OK_SECONDS, a silent one for PROVIDER_DOWN_SECONDS, so that a provider back up is noticed soon without
every rerun of every page waiting on it. Nothing here imports Streamlit: ui/identity.py reads the secrets.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

# What an OpenID Connect configuration needs in .streamlit/secrets.toml for st.login to work.
AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")
PROVIDER_TIMEOUT = 3.0  # seconds to wait for the sign-in provider's metadata before saying it is unreachable
PROVIDER_OK_SECONDS, PROVIDER_DOWN_SECONDS = 600.0, 30.0
EMPTY_SECTION = ("sign-in is configured but [auth] in .streamlit/secrets.toml is empty; fill it in (see the README, "
                 "Sharing the app) and restart the app")
NO_AUTHLIB = ("sign-in is configured but the Authlib package is not installed; install requirements.txt "
              "(streamlit[auth]) and restart the app")

LOG = logging.getLogger("hybrid_lab.access")
_logged: set[str] = set()
_provider_answers: dict[str, tuple[float, str | None]] = {}  # metadata URL -> (when asked, its problem)
_lock = threading.Lock()


def sign_in_problem(section: Mapping) -> str | None:
    """What keeps sign-in from working, given a configured `[auth]` section: a missing or wrong key, Authlib
    missing, or a provider that does not answer (its answer kept a while)."""
    problem = auth_problem(dict(section)) if section else EMPTY_SECTION
    if problem:
        return problem
    if importlib.util.find_spec("authlib") is None:
        return NO_AUTHLIB
    return checked_provider_problem(str(section["server_metadata_url"]))


def auth_problem(section: Mapping | None) -> str | None:
    """What is missing or wrong in the `[auth]` section, in one sentence; None when it can be used."""
    if not section:
        return None
    missing = [key for key in AUTH_KEYS if not str(section.get(key) or "").strip()]
    if missing:
        return (f"sign-in is configured but [auth] in .streamlit/secrets.toml has no {', '.join(missing)}; "
                f"add {'it' if len(missing) == 1 else 'them'} (see the README, Sharing the app) and restart the app")
    for key in ("redirect_uri", "server_metadata_url"):
        try:
            scheme = urlsplit(str(section[key])).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("http", "https"):
            return (f"sign-in is configured but [auth] {key} is {section[key]!r}, not an http(s) address; "
                    "fix it in .streamlit/secrets.toml and restart the app")
    if not str(section["redirect_uri"]).endswith("/oauth2callback"):
        return (f"sign-in is configured but [auth] redirect_uri is {section['redirect_uri']!r}, which does not end "
                "with /oauth2callback, the address Streamlit receives the sign-in at; fix it in "
                ".streamlit/secrets.toml (and at the provider) and restart the app")
    return None


def provider_problem(metadata_url: str, timeout: float = PROVIDER_TIMEOUT) -> str | None:
    """Whether the sign-in provider answers at its metadata URL with an OpenID configuration, in one sentence;
    None when it does. Waits at most `timeout` seconds."""
    try:
        with urllib.request.urlopen(metadata_url, timeout=timeout) as answer:
            metadata = json.loads(answer.read(1_000_000))
    except (OSError, ValueError, http.client.HTTPException) as error:  # refused, timed out, cut short, not JSON
        reason = getattr(error, "reason", None) or error
        return (f"sign-in is configured but its provider does not answer at {metadata_url} ({reason}); "
                "nobody can sign in until it does: check that the provider is up and that server_metadata_url "
                "in .streamlit/secrets.toml is right")
    if not isinstance(metadata, dict) or not metadata.get("authorization_endpoint"):
        return (f"sign-in is configured but {metadata_url} is not an OpenID Connect configuration (no "
                "authorization_endpoint); set server_metadata_url in .streamlit/secrets.toml to the provider's "
                ".well-known/openid-configuration address")
    return None


def checked_provider_problem(url: str) -> str | None:
    """provider_problem, its answer kept a while (see PROVIDER_OK_SECONDS)."""
    with _lock:
        asked = _provider_answers.get(url)
    if asked is not None:
        age = time.monotonic() - asked[0]
        if age < (PROVIDER_OK_SECONDS if asked[1] is None else PROVIDER_DOWN_SECONDS):
            return asked[1]
    problem = provider_problem(url)
    with _lock:
        _provider_answers[url] = (time.monotonic(), problem)
    return problem


def log_once(problem: str) -> None:
    """Say a sign-in problem in the server log, once per problem (not once per rerun of every page)."""
    with _lock:
        if problem in _logged:
            return
        _logged.add(problem)
    LOG.error("Hybrid Lab: %s", problem)
