"""Who is asking: the facts of a request gathered for core.access, and the access line of the pages that act.

One function gathers them (`current_access`): how the server listens (the server.address option), the
request's headers (st.context.headers: the browser's WebSocket handshake), whether `[auth]` is configured
(st.secrets) and the signed-in user's claims (st.user). core.access decides what they mean. A guest is a random
key kept in this browser session's state: one tab, one guest; nothing a visitor sends chooses it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st
from streamlit.errors import StreamlitAuthError

from core import access
from core.access import Identity, PermissionRefused, ServeMode
from core.sign_in import log_once, sign_in_problem
from ui import texts

GUEST_STATE = "access_guest"  # this browser session's guest identity, in guests mode
ACCESS_LINE = "access_line"  # the key of the line's container (browser tests find it by it)
NOT_SIGNED_IN = ("You are not signed in: you can look at every run. Sign in to train, keep drawings or stop your "
                 "runs.")
GUEST_LINE = ("You are a guest: you can train and upload data within the guest limits, and stop the runs this browser "
              "tab started; runs cannot be deleted. For sign-in, the operator configures [auth] (see the README).")


@dataclass(frozen=True)
class Access:
    """How the app is served for this request, who is asking, and what is wrong with sign-in (one sentence)."""

    mode: ServeMode
    identity: Identity
    problem: str | None = None


def signed_in_claims() -> dict | None:
    """The signed-in user's ID-token claims (iss, sub, email, name), None when nobody is signed in."""
    user = st.user.to_dict()
    return user if user.get("is_logged_in") is True else None


def auth_section() -> tuple[Mapping | None, str | None]:
    """The `[auth]` section of the secrets (None when there is none), and a problem when the secrets cannot be
    read at all: then sign-in may have been meant, so nobody is let in as the person at the machine."""
    if not st.secrets.load_if_toml_exists():
        present = [path for path in st.get_option("secrets.files") or [] if os.path.exists(os.path.expanduser(path))]
        if present:
            return {}, (f"the secrets file {present[0]} cannot be read (the server log says why); fix it and restart "
                        "the app")
        return None, None
    section = st.secrets.get("auth")
    if section is None:
        return None, None
    if not isinstance(section, Mapping):
        return {}, "[auth] in the secrets file is not a section of keys; see the README, Sharing the app"
    return section, None



def current_identity() -> Identity:
    """Who is asking, for this request."""
    return current_access().identity


def current_access() -> Access:
    """How the app is served for this request, who is asking, and what is wrong with sign-in, if anything."""
    section, problem = auth_section()
    mode = access.serve_mode(st.get_option("server.address"), section is not None, dict(st.context.headers))
    if mode is ServeMode.PERSONAL:
        return Access(mode, access.OPERATOR)
    if mode is ServeMode.GUESTS:
        return Access(mode, access.identify(mode, guest=session_guest()))
    problem = problem or sign_in_problem(section)
    claims = signed_in_claims()
    try:
        identity = access.identify(mode, claims=claims, auth_broken=problem is not None)
    except PermissionRefused as refusal:  # the provider named nobody: read-only, and say why
        identity, problem = access.reader(), str(refusal)
    if problem:
        log_once(problem)
    return Access(mode, identity, problem)


def session_guest() -> Identity:
    """This browser session's guest, made on its first request (a random key, never from what it sends)."""
    guest = st.session_state.get(GUEST_STATE)
    if not (isinstance(guest, Identity) and access.is_guest_key(guest.key) and guest.role is access.Role.GUEST):
        guest = st.session_state[GUEST_STATE] = access.new_guest()
    return guest


def sentence(text: str) -> str:
    """Core's clause as a sentence for st.error: capitalised, one line, ending with a full stop, and shown as
    written (no Markdown in a provider's URL or a person's name)."""
    text = re.sub(r"\s+", " ", text).strip()
    text = text[:1].upper() + text[1:]
    return texts.plain(text if text.endswith((".", "?", "!")) else text + ".")


def access_line() -> Identity:
    """The line at the top of a page that acts: who you are here and what you may do, with Sign in or Sign out
    (none in personal mode: nothing changes for the person at the machine). Returns who is asking."""
    here = current_access()
    if here.mode is ServeMode.PERSONAL:
        return here.identity
    with st.container(key=ACCESS_LINE, horizontal=True, vertical_alignment="center", gap="small"):
        if here.mode is ServeMode.GUESTS:
            st.markdown(GUEST_LINE)
            return here.identity
        if here.problem:
            st.error(sentence(here.problem))
        elif here.identity.signed_in:
            role = " · operator" if here.identity.is_operator else ""
            st.markdown(f"Signed in as **{texts.plain(here.identity.name)}**{role}")
        else:
            st.markdown(NOT_SIGNED_IN)
            if st.button("Sign in", key="access_sign_in", icon=":material/login:", type="primary"):
                sign_in()
        if here.identity.signed_in and st.button("Sign out", key="access_sign_out", icon=":material/logout:"):
            st.logout()
    return here.identity


def sign_in() -> None:
    """Start the provider's sign-in; what Streamlit refuses (a broken [auth]) is one sentence, never a traceback."""
    try:
        st.login()
    except StreamlitAuthError as error:
        problem = f"sign-in could not start: {error}"
        log_once(problem)
        st.error(sentence(problem))
