"""Who is asking, and what they may do: the three ways to serve, identities, and the permission checks.

The app is served in one of three ways (ServeMode):
- personal: `make run` — it listens on loopback, no sign-in is configured, and the request shows no sign of
  a proxy. The one person at the machine is the operator.
- sign-in: `[auth]` is configured in .streamlit/secrets.toml. Who a visitor is comes from the OpenID Connect
  provider (issuer + subject); until they sign in they only read. Operators are the identities listed in
  HYBRID_LAB_OPERATORS.
- guests: served beyond loopback, or reached through a proxy, with no `[auth]`. Every browser session is a
  guest of its own: it trains within the guest limits and stops only what it started; nobody deletes.

Pages gather the facts of a request (the listening address, the request's headers, the signed-in user's
claims) and call `serve_mode` and `identify`; every function that acts (core/service.py submit and stop, the
store's delete) takes the resulting Identity and calls the checks below, so a crafted request meets the same
rule as a click. Nothing here trusts an address or a header to say who someone is: headers can only make a
request *less* trusted (a sign of a proxy turns the person at the machine into a guest), never more.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

OPERATORS_ENV = "HYBRID_LAB_OPERATORS"
# The names a browser at the machine itself uses for the app. Only these: 127.0.0.2 and the rest of 127/8 are
# how the tests play "another machine" on one host, and a proxy may well sit on one of them.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Headers a reverse proxy adds to say whom it forwards (RFC 7239 and the common de-facto ones). Their
# *presence* makes a request remote; their values are never believed, since a visitor can set them too.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip")
# The person at the machine, and the owner of every run the command line starts (and of runs made before
# runs had owners).
OPERATOR_KEY = "local"
GUEST_PREFIX = "guest:"  # every guest's key starts so: the service counts all guests' runs together
# A guest is one browser tab: once it is closed, nobody can reach what it kept. What a guest kept (drawings,
# uploads) and left untouched this long is let go when a guest next keeps something.
GUEST_KEEP_SECONDS = 24 * 3600


class ServeMode(StrEnum):
    """How the app is served, which decides who a visitor can be."""

    PERSONAL = "personal"
    SIGN_IN = "sign-in"
    GUESTS = "guests"


class Role(StrEnum):
    """What an identity may do: operators anything, members their own runs, guests their session's runs."""

    OPERATOR = "operator"
    MEMBER = "member"
    GUEST = "guest"


class PermissionRefused(ValueError):
    """The identity may not do this; the message says who may."""


@dataclass(frozen=True)
class Identity:
    """Who is asking: a stable key that runs record as their owner, a name to show, and a role."""

    key: str  # "local", "oidc:<issuer>#<subject>" or "guest:<random>"; never an address or a header
    name: str
    role: Role
    signed_in: bool = False
    # In sign-in mode a visitor who has not signed in yet reads everything and acts on nothing.
    may_act: bool = True

    @property
    def is_operator(self) -> bool:
        """True for the person at the machine and the listed operators."""
        return self.role is Role.OPERATOR


# Its name is what the Runs page's Owner column shows for the command line's runs and older ones.
OPERATOR = Identity(OPERATOR_KEY, "operator", Role.OPERATOR)


def new_guest() -> Identity:
    """A guest of its own, for one browser session (the key is random: nothing a visitor sends chooses it)."""
    token = secrets.token_hex(8)
    return Identity(f"{GUEST_PREFIX}{token}", f"guest {token[:4]}", Role.GUEST)


def is_guest_key(key: str | None) -> bool:
    """True for the owner key of a run a guest started."""
    return isinstance(key, str) and key.startswith(GUEST_PREFIX)


def reader() -> Identity:
    """A visitor of a sign-in server who has not signed in: reads, acts on nothing."""
    return Identity("anonymous", "not signed in", Role.GUEST, may_act=False)


def operators_listed(text: str | None = None) -> frozenset[str]:
    """The emails and subjects HYBRID_LAB_OPERATORS lists (comma- or space-separated, emails compared in lower case)."""
    text = os.environ.get(OPERATORS_ENV, "") if text is None else text
    return frozenset(item.strip().lower() for item in text.replace(",", " ").split() if item.strip())


def member(claims: Mapping, operators: frozenset[str] | None = None) -> Identity:
    """The identity of a signed-in user from their ID token's claims (issuer + subject), operator if listed.

    An email makes its owner an operator only when the provider does not say it is unverified
    (`email_verified: false`): a provider where people type in any email must not make them operators.
    """
    issuer, subject = str(claims.get("iss") or ""), str(claims.get("sub") or "")
    if not subject:
        raise PermissionRefused("the sign-in provider gave no subject for this user, so they cannot be told apart "
                                "from others; check the provider's configuration")
    email = str(claims.get("email") or "")
    name = str(claims.get("name") or email or subject)
    listed = operators_listed() if operators is None else operators
    trusted_email = email and claims.get("email_verified") is not False
    role = Role.OPERATOR if (subject.lower() in listed or (trusted_email and email.lower() in listed)) \
        else Role.MEMBER
    return Identity(f"oidc:{issuer}#{subject}", name, role, signed_in=True)


def is_loopback(host: str | None) -> bool:
    """True for a loopback host name or address, with or without a port."""
    if not host:
        return False
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare.lower() in LOOPBACK_HOSTS:  # an address alone, such as the listening address ::1
        return True
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:  # a Host header that is not a host: certainly not the machine itself
        return False
    return name in LOOPBACK_HOSTS


def through_proxy(headers: Mapping[str, str]) -> bool:
    """True when the request shows any sign of having come through a proxy, or from a browser elsewhere:
    forwarding headers, or a Host or Origin that is not loopback."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    if any(name in lowered for name in FORWARDING_HEADERS):
        return True
    if "host" in lowered and not is_loopback(lowered["host"]):
        return True
    origin = lowered.get("origin")
    if not origin or origin == "null":  # no Origin, or a page of no origin (a file): nothing to tell
        return False
    try:
        return not is_loopback(urlsplit(origin).netloc)
    except ValueError:  # an Origin that is not an address: not from this machine's browser
        return True


def serve_mode(listening_address: str | None, auth_configured: bool, headers: Mapping[str, str]) -> ServeMode:
    """How this request is served: sign-in when `[auth]` exists; personal only on loopback with no sign of a
    proxy; guests otherwise. An unset listening address means every interface."""
    if auth_configured:
        return ServeMode.SIGN_IN
    if is_loopback(listening_address) and not through_proxy(headers):
        return ServeMode.PERSONAL
    return ServeMode.GUESTS


def identify(mode: ServeMode, *, guest: Identity | None = None, claims: Mapping | None = None,
             auth_broken: bool = False, operators: frozenset[str] | None = None) -> Identity:
    """Who is asking, from how the app is served: the operator in personal mode, this browser session's guest
    in guests mode, and in sign-in mode the signed-in user (`claims`, None when not signed in) or, until then
    or while `[auth]` is broken, a reader. PermissionRefused when the provider's claims name nobody."""
    if mode is ServeMode.PERSONAL:
        return OPERATOR
    if mode is ServeMode.GUESTS:
        if guest is None or guest.role is not Role.GUEST:
            raise ValueError("guests mode needs this browser session's guest identity (new_guest)")
        return guest
    if auth_broken or not claims:
        return reader()
    return member(claims, operators)


# ------------------------------------------------------------------------------------------- the checks


def owner_of(status) -> str:
    """The key of a run's owner; runs from before owners were recorded belong to the operator."""
    return (getattr(status, "owner", None) if status is not None else None) or OPERATOR_KEY


def owner_name_of(status) -> str:
    """The name to show for a run's owner: the one recorded, or "operator" for the operator's and older runs."""
    if owner_of(status) == OPERATOR_KEY:
        return OPERATOR.name
    return getattr(status, "owner_name", None) or owner_of(status)


def owns(identity: Identity, run) -> bool:
    """True when this identity started the run (and may act at all)."""
    return identity.may_act and owner_of(run.status) == identity.key


def may_train(identity: Identity) -> bool:
    """Whether this identity may queue runs (everyone who may act)."""
    return identity.may_act


def may_stop(identity: Identity, run) -> bool:
    """Operators stop any run; everyone else only their own."""
    return identity.is_operator or owns(identity, run)


def may_delete(identity: Identity, run) -> bool:
    """Operators delete any run; signed-in members their own; guests nothing."""
    return identity.is_operator or (identity.role is Role.MEMBER and owns(identity, run))


def may_use_files(identity: Identity) -> bool:
    """Only operators may name files of the server as data."""
    return identity.is_operator


def who_may(run, verb: str) -> str:
    """Who may stop or delete a run, in words: "only Alice, who started run X, or an operator may stop it"."""
    if owner_of(run.status) == OPERATOR_KEY:
        return f"only an operator may {verb} run {run.run_id}"
    return f"only {owner_name_of(run.status)}, who started run {run.run_id}, or an operator may {verb} it"


def check_train(identity: Identity) -> None:
    """Refuse a visitor who may not train, saying how to get there."""
    if not may_train(identity):
        raise PermissionRefused("only signed-in users train on this server, which keeps every run under who "
                                "started it; sign in (at the top of the page) and try again")


def check_stop(identity: Identity, run) -> None:
    """Refuse to stop a run that is not this identity's to stop, naming who may."""
    if not may_stop(identity, run):
        if not identity.may_act:
            raise PermissionRefused(f"sign in to stop runs; {who_may(run, 'stop')}")
        raise PermissionRefused(who_may(run, "stop"))


def check_delete(identity: Identity, run) -> None:
    """Refuse to delete a run that is not this identity's to delete, naming who may."""
    if may_delete(identity, run):
        return
    if not identity.may_act:
        raise PermissionRefused(f"sign in to delete runs; {who_may(run, 'delete')}")
    if identity.role is Role.GUEST:
        raise PermissionRefused("guests cannot delete runs, not even their own; ask an operator")
    raise PermissionRefused(who_may(run, "delete"))


def check_files(identity: Identity) -> None:
    """Refuse a run on the server's own files for anyone but an operator."""
    if not may_use_files(identity):
        raise PermissionRefused("this server does not read its own files for visitors; choose the auto, keras or "
                                "offline source")

