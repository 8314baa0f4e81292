"""Secrets never reach a results file, a log or the terminal: header values, URL credentials and
secret-looking fields are masked before anything is written or printed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
_SECRET_WORDS = r"auth|token|secret|key|cookie|pass|pwd|session|signature|credential|bearer|jwt"
_SECRET_NAME = re.compile(_SECRET_WORDS, re.I)
# In free text: a secret-looking name, then ':' or '=' or a space, then its value — a quoted
# string, or words up to a separator (so 'Authorization: Bearer x' loses both words).
_NAME = rf"[\w.-]*(?:{_SECRET_WORDS})[\w.-]*"
_VALUE = r"\"[^\"]*\"|[^\s&,;'\"<>]+(?: [^\s&,;:'\"<>=]+)*"
_SECRET_PAIR = re.compile(rf"(?<![\w./-])(\"?(?:{_NAME})\"?)(\s*[:=]\s*|\s+)({_VALUE})", re.I)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)


def is_secret_name(name: str) -> bool:
    """Whether a header, field or query-parameter name usually carries a credential."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL without user:password and with secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_header(header: str) -> str:
    """'Authorization: Bearer x' → 'Authorization: <redacted>'; other headers unchanged."""
    name, sep, _ = header.partition(":")
    return f"{name}: {REDACTED}" if sep and is_secret_name(name.strip()) else redact_text(header)


def redact_text(text: str) -> str:
    """Free text (an error message, a request body) with URL credentials and the values of
    secret-looking names masked: `user:pw@`, `password=x`, `"token": "x"`, `Authorization Bearer x`."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit for a results file: header values, URL credentials and secret-looking
    fields of a request body redacted."""
    out: list[str] = []
    expect_header = False
    for arg in argv:
        if expect_header:
            out.append(redact_header(arg))
            expect_header = False
        elif arg in ("-H", "--header"):
            out.append(arg)
            expect_header = True
        elif arg.startswith("--header="):
            out.append("--header=" + redact_header(arg[len("--header="):]))
        elif arg.startswith("-H") and len(arg) > 2:
            out.append("-H" + redact_header(arg[2:]))
        else:
            out.append(redact_text(arg))
    return out
