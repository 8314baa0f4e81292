"""Secrets never reach a results file, a log or the terminal: header values, URL credentials and
secret-looking fields are masked before anything is written or printed.

Two nets. By shape: a secret-looking name's value, a URL's password (`redact_text`). By value:
every secret the command line carries (`register_from_argv`) is masked wherever it turns up —
an error message quoting a malformed URL, a server's 401 that echoes the API key back — in
everything shown (`masked_streams`) and written (`redact_known`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any
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
# user:password@ in anything URL-like, with or without a scheme, well-formed or not.
_USERINFO = re.compile(r"(?:^|//|[\s'\"(=])([^\s/@:'\"(=]+):([^\s/@'\"]+)@")
# A value shorter than this is not taken for a secret to mask everywhere: it would mask every
# "1" and "ok" of the output.
MIN_SECRET_LENGTH = 4
_known: set[str] = set()


def register_secret(value: str) -> None:
    """Mask `value` wherever it appears from now on (in the process's output and files)."""
    value = value.strip()
    if len(value) >= MIN_SECRET_LENGTH:
        _known.add(value)
        # 'Bearer abc123': the token alone may be echoed too.
        for word in value.split():
            if len(word) >= MIN_SECRET_LENGTH and word.lower() not in ("bearer", "basic", "token", "digest"):
                _known.add(word)


def register_from_argv(argv: Sequence[str]) -> None:
    """Every secret a command line carries: values of secret-looking headers, URL passwords
    (of any argument, a malformed URL's or a --cluster address's too), secret-looking query
    values."""
    expect_header = False
    for arg in argv:
        header = None
        if expect_header:
            header, expect_header = arg, False
        elif arg in ("-H", "--header"):
            expect_header = True
        elif arg.startswith("--header="):
            header = arg[len("--header="):]
        elif arg.startswith("-H") and len(arg) > 2:
            header = arg[2:]
        if header is not None:
            name, sep, value = header.partition(":")
            if sep and is_secret_name(name.strip()):
                register_secret(value)
            continue
        for match in _USERINFO.finditer(arg):
            register_secret(match.group(2))
        for name, value in re.findall(r"[?&]([^=&#\s]+)=([^&#\s]*)", arg):
            if is_secret_name(name):
                register_secret(value)


def redact_known(text: str) -> str:
    """`text` with every registered secret masked (the longest first, so none is half-masked)."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _MaskedStream:
    """A text stream that masks the registered secrets in what is written to it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_known(text) if _known else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def masked_streams() -> None:
    """From now on, what is printed to stdout and stderr has the registered secrets masked:
    every message, table and warning, whoever writes it."""
    if not isinstance(sys.stdout, _MaskedStream):
        sys.stdout = _MaskedStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _MaskedStream):
        sys.stderr = _MaskedStream(sys.stderr)  # type: ignore[assignment]


def is_secret_name(name: str) -> bool:
    """Whether a header, field or query-parameter name usually carries a credential."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL without user:password and with secret-looking query values masked (a malformed
    one too, as far as its shape shows them)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_known(_USERINFO.sub(lambda m: m.group(0).replace(f"{m.group(1)}:{m.group(2)}@",
                                                                       f"{REDACTED}@"), url))
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
    text = redact_known(text)
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _USERINFO.sub(lambda m: m.group(0).replace(f"{m.group(1)}:{m.group(2)}@", f"{REDACTED}@"), text)
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
