"""The storage port: where call artefacts (recordings) live once a call has ended.

A call's recording is written on the machine that carried the call; a `Storage`
is the one place every process (API, leader, workers) reads it from and deletes it
in, whichever machine that was. Objects are named by keys such as
`recordings/<call id>-<attempt>.wav` (`recording_key`). A storage must:

- `put_file`: store a local file under a key, replacing any object of that key, and
  return only once the object is durable (a second put of the same file is harmless:
  uploads are retried after crashes);
- `size`: the object's length in bytes, or None when there is no such object;
- `read`: stream bytes `start` to `end` inclusive of an existing object in chunks
  (raise `ObjectMissing` when it is absent), so a 30-minute WAV never sits in memory;
- `delete`: remove the object; deleting an absent one is not an error (deletions are
  retried too) — True when something was there;
- `presign`: a short-lived URL that lets a browser fetch the object directly, or None
  when the storage has none (a local directory).

Every method blocks (file and HTTP I/O); async callers run them in a thread. A
failure of the storage itself (unreachable, refused) raises `StorageError` with a
message naming the storage; callers keep their durable record and retry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

__all__ = [
    "CHUNK_BYTES",
    "ObjectMissing",
    "Storage",
    "StorageError",
    "check_key",
    "content_type",
    "recording_key",
]

CHUNK_BYTES = 64 * 1024
"""What `read` yields at a time."""

_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".json": "application/json",
}


class StorageError(Exception):
    """The storage failed (unreachable, refused, full); the operation may be retried."""


class ObjectMissing(StorageError):  # noqa: N818 - reads as what happened
    """No object under that key."""


class Storage(Protocol):
    def describe(self) -> str:
        """Where objects go, for logs and errors (no credentials)."""
        ...

    def put_file(self, key: str, source: Path) -> None: ...

    def size(self, key: str) -> int | None: ...

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]: ...

    def delete(self, key: str) -> bool: ...

    def presign(self, key: str, ttl_s: int) -> str | None: ...


def check_key(key: str) -> str:
    """`key` if it is a relative, slash-separated name without `.`/`..` parts."""
    if not _KEY.match(key) or len(key) > 400:
        raise ValueError(f"not a storage key: {key!r}")
    return key


def recording_key(call_id: str, attempt: int) -> str:
    """The key of one attempt's recording."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", call_id)
    return f"recordings/{name}-{attempt}.wav"


def content_type(key: str) -> str:
    """The media type an object is served with, from its key's extension."""
    return _TYPES.get(Path(key).suffix.lower(), "application/octet-stream")
