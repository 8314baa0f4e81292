"""Resuming an interrupted pipeline from what its output already holds.

The input is identified when a run starts — its path, size, a hash of its first and last MiB,
and the chunk size — in `<output>.input.json`; a resume against another input is refused, naming
what differs. The output is read back line by line: each chunk with an embedding is done; a line
that is not whole JSON (the last one, cut by a crash) and the error lines are dropped, so their
chunks are sent again, and the file is rewritten with the good lines only — each chunk once.
Which chunks are done is a bitmap: an eighth of a byte per chunk, whatever the input's size.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from asyncbench.errors import UsageError

_MIB = 1024 * 1024


class Done:
    """The chunk numbers that have a result, as a bitmap."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def add(self, i: int) -> None:
        byte, bit = divmod(i, 8)
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits)))
        if not self.bits[byte] >> bit & 1:
            self.bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int) or i < 0:
            return False
        byte, bit = divmod(i, 8)
        return byte < len(self.bits) and bool(self.bits[byte] >> bit & 1)


def fingerprint(source: Path, chunk_bytes: int) -> dict[str, Any]:
    """What identifies an input: path, size, a hash of its first and of its last MiB, chunk size."""
    size = source.stat().st_size
    with open(source, "rb") as f:
        head = hashlib.blake2b(f.read(_MIB), digest_size=16).hexdigest()
        f.seek(max(0, size - _MIB))
        tail = hashlib.blake2b(f.read(_MIB), digest_size=16).hexdigest()
    return {"path": str(source.resolve()), "size": size, "first_mib": head, "last_mib": tail,
            "chunk_bytes": chunk_bytes}


def fingerprint_path(output: Path) -> Path:
    return output.with_name(output.name + ".input.json")


def write_fingerprint(output: Path, facts: dict[str, Any]) -> None:
    fingerprint_path(output).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")


_NAMES = {"path": "its path", "size": "its size", "first_mib": "its first MiB", "last_mib": "its last MiB",
          "chunk_bytes": "the chunk size"}


def check_resumable(output: Path, facts: dict[str, Any]) -> None:
    """UsageError when there is nothing to resume at `output`, or it was made from another input."""
    saved_path = fingerprint_path(output)
    if not output.exists() or not saved_path.exists():
        raise UsageError(f"--resume: no earlier output at {str(output)!r} (and its {saved_path.name}) to continue")
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume: {saved_path} cannot be read ({exc})") from None
    differ = [f"{_NAMES[k]} ({saved.get(k)!r} then, {facts[k]!r} now)" for k in _NAMES
              if k != "path" and saved.get(k) != facts[k]]
    if differ:
        raise UsageError(f"--resume: {output} was made from another input: " + "; ".join(differ))


def recover(output: Path) -> Done:
    """The chunks `output` holds a result for; the file rewritten with those lines only (a cut
    last line and the error lines dropped: their chunks are to be sent again)."""
    done = Done()
    scratch = output.with_name(output.name + ".resume-tmp")
    with open(output, "rb") as src, open(scratch, "wb") as dst:
        for raw in src:
            if not raw.endswith(b"\n"):
                break  # cut by the crash
            try:
                line = json.loads(raw)
                ident = line["id"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(ident, int) and ident >= 0 and "embedding" in line and ident not in done:
                done.add(ident)
                dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(scratch, output)
    return done
