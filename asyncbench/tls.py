"""TLS for the client side of a run: one context built from the options, verified by default
against the system's trust store, and failures said in one line that names their cause.

The context offers only HTTP/1.1 by ALPN (what the engines speak) and keeps the system's
defaults otherwise. `TlsFacts` counts the handshakes a run made, full or resumed, and what
they agreed on.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TlsSettings:
    """How the client checks and presents itself: a private CA (`cacert`), a client certificate
    (`cert` and `key`), no check at all (`insecure`), and whether new connections resume an
    earlier session (`resume`)."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    resume: bool = True

    def context(self) -> ssl.SSLContext:
        """The client context these settings make, one per process (a TLS session can be resumed
        only through the context that made it); ssl.SSLError/OSError for unreadable files."""
        return _context(self)


@functools.lru_cache(maxsize=16)
def _context(settings: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.cacert) if settings.cacert else None)
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert is not None:
        context.load_cert_chain(str(settings.cert), str(settings.key) if settings.key else None)
    context.set_alpn_protocols(["http/1.1"])
    return context


def describe_failure(exc: BaseException, host: str) -> str | None:
    """What a failed TLS handshake means, in one line naming the cause (an unknown CA, a name
    the certificate does not cover, an expired certificate, a certificate the server wanted),
    and what to do; None when `exc` is no TLS failure."""
    cause: BaseException | None = getattr(exc, "certificate_error", None) or exc  # aiohttp's wrapper
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, ssl.SSLError):
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        message = getattr(cause, "verify_message", None) or str(cause)
        code = getattr(cause, "verify_code", None)
        if code in (10,) or "expired" in message:
            why = "its certificate has expired"
        elif "Hostname mismatch" in message or "IP address mismatch" in message or code == 62:
            why = f"its certificate is not valid for {host!r}"
        elif code in (18, 19, 20, 21) or "issuer" in message or "self-signed" in message or "self signed" in message:
            why = "its certificate is signed by an unknown authority"
        else:
            why = f"its certificate was refused ({message})"
        return (f"TLS handshake with {host} failed: {why} ({message}); trust a private CA with --cacert FILE, "
                "or skip the check with -k")
    reason = getattr(cause, "reason", None) or str(cause)
    if "CERTIFICATE_REQUIRED" in str(reason).upper() or "certificate required" in str(cause).lower():
        return (f"TLS handshake with {host} failed: the server asks for a client certificate: pass --cert FILE "
                "--key FILE")
    return f"TLS handshake with {host} failed: {reason}"


@dataclass
class TlsFacts:
    """The handshakes a run's connections made: how many were full and how many resumed, and the
    protocol version and cipher they agreed on (the last seen)."""

    full: int = 0
    resumed: int = 0
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, ssl_object: Any) -> None:
        if ssl_object is None:
            return
        if getattr(ssl_object, "session_reused", False):
            self.resumed += 1
        else:
            self.full += 1
        self.version = ssl_object.version()
        cipher = ssl_object.cipher()
        self.cipher = cipher[0] if cipher else None
        self.alpn = ssl_object.selected_alpn_protocol()

    def merge(self, other: TlsFacts) -> None:
        self.full += other.full
        self.resumed += other.resumed
        self.version = other.version or self.version
        self.cipher = other.cipher or self.cipher
        self.alpn = other.alpn or self.alpn

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "cipher": self.cipher, "alpn": self.alpn,
                "handshakes_full": self.full, "handshakes_resumed": self.resumed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TlsFacts:
        return cls(full=int(data.get("handshakes_full", 0)), resumed=int(data.get("handshakes_resumed", 0)),
                   version=data.get("version"), cipher=data.get("cipher"), alpn=data.get("alpn"))
