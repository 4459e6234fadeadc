"""Alert channels: where checkup and server alerts go (Slack, a JSON webhook, SMTP mail).

Channel URLs are secrets (a Slack webhook URL is its own credential; SMTP URLs may hold a
password), so logs, alerts.db and ``repr(channel)`` show only ``Channel.label``, and a channel
that cannot be parsed is never echoed back in the error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from kennel.errors import InvalidOptionError

ChannelKind = Literal["slack", "webhook", "email"]

_FORMS = (
    "slack:https://hooks.slack.com/services/…",
    "webhook:https://host/path",
    "email:smtp://[user:pass@]host:port?to=a@b,c@d&from=x@y[&starttls=1]",
)
_HINT = (
    "Write a channel as one of: "
    + "; ".join(_FORMS)
    + " (percent-encode '@', '/', ':' in a user or password)."
)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True, repr=False)
class Channel:
    """Where alerts go. ``target`` is the URL to POST to (slack, webhook) or ``smtp://host:port``
    (email, whose recipients, sender and login are the other fields)."""

    kind: ChannelKind
    target: str
    to: tuple[str, ...] = ()
    sender: str = ""
    username: str | None = None
    password: str | None = None
    starttls: bool = False

    @property
    def label(self) -> str:
        """The channel without its secrets, for logs, alerts.db and error messages."""
        if self.kind == "email":
            login = "user@" if self.username else ""
            tls = "&starttls=1" if self.starttls else ""
            host = self.target.removeprefix("smtp://")
            return f"email:smtp://{login}{host}?to={','.join(self.to)}{tls}"
        url = urlsplit(self.target)
        host = url.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{url.port}" if url.port else ""
        segments = [s for s in url.path.split("/") if s]
        # the first segment names the service; later ones (Slack's T/B/token) are often the secret
        path = f"/{segments[0]}" + ("/…" if len(segments) > 1 else "") if segments else ""
        return f"{self.kind}:{url.scheme}://{host}{port}{path}"

    @property
    def key(self) -> str:
        """A short hash telling channels apart in alerts.db (two Slack webhooks on one host). Not of the
        password: with the rest known from the label, its hash would let a weak one be guessed offline."""
        whole = "\n".join(
            [self.kind, self.target, *self.to, self.sender, self.username or "", str(self.starttls)]
        )
        return hashlib.sha256(whole.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Channel({self.label!r})"


def _bad(problem: str) -> InvalidOptionError:
    return InvalidOptionError(f"Not an alert channel: {problem}.", hint=_HINT)


def _address(text: str, what: str) -> str:
    addr = text.strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c in addr for c in " \t\r\n,<>;\"'"):
        raise _bad(f"{what} {addr!r} is not an email address")
    return addr


def parse_channel(text: str) -> Channel:
    """``slack:URL``, ``webhook:URL`` or ``email:smtp://[user:pass@]host:port?to=…&from=…[&starttls=1]``."""
    kind, sep, url = (part.strip() for part in text.strip().partition(":"))
    if not sep or kind.lower() not in ("slack", "webhook", "email"):
        # never echo the input: without a kind, or with a typo, it may be a secret URL
        raise _bad("it must start with slack:, webhook: or email:")
    kind = kind.lower()
    if kind == "email":
        return _parse_email(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise _bad(f"the {kind} URL cannot be parsed") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host or any(c.isspace() for c in url):
        raise _bad(f"a {kind} channel needs an http:// or https:// URL with a host and no spaces")
    return Channel(kind="slack" if kind == "slack" else "webhook", target=url)


def _parse_email(url: str) -> Channel:
    parts = urlsplit(url)
    if parts.scheme.lower() != "smtp":
        raise _bad("an email channel needs an smtp:// URL")
    try:
        host, port = parts.hostname, parts.port or 25
    except ValueError as exc:  # a port that is not a number, or out of range
        raise _bad(f"the SMTP port is not valid ({exc})") from exc
    if not host:
        raise _bad("the SMTP URL has no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise _bad("the SMTP URL takes no path; put recipients in ?to=")
    query = parse_qs(parts.query, keep_blank_values=True)
    if unknown := sorted(set(query) - {"to", "from", "starttls"}):
        raise _bad(f"unknown SMTP option {unknown[0]!r} (known: to, from, starttls)")
    to = [_address(a, "recipient") for v in query.get("to", []) for a in v.split(",") if a.strip()]
    if not to:
        raise _bad("the email channel has no recipients (?to=a@b,c@d)")
    if len(query.get("from", [])) != 1:
        raise _bad("the email channel needs one sender (&from=x@y)")
    tls = query.get("starttls", ["0"])[-1].lower()
    if tls not in _TRUE | _FALSE:
        raise _bad(f"starttls={tls!r} is not 1 or 0")
    user, password = parts.username, parts.password
    return Channel(
        kind="email",
        target=f"smtp://{f'[{host}]' if ':' in host else host}:{port}",
        to=tuple(to),
        sender=_address(query["from"][0], "sender"),
        username=unquote(user) if user else None,
        password=None if password is None else unquote(password),
        starttls=tls in _TRUE,
    )
