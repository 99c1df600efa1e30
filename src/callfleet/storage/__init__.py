"""Call artefacts that follow the call across machines: the storage port and its adapters.

`port.Storage` is the contract; `local.LocalStorage` (a directory, the embedded
default) and `s3.S3Storage` (any S3-compatible store) fill it, and
`memory.MemoryStorage` is its fake. `open_storage` builds the one that
`CALLFLEET_STORAGE_URL` names.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from callfleet.storage.port import (
    ObjectMissing,
    Storage,
    StorageError,
    content_type,
    recording_key,
)

__all__ = [
    "ObjectMissing",
    "Storage",
    "StorageError",
    "content_type",
    "locate",
    "open_storage",
    "recording_key",
]


def locate(storage: Storage, key: str) -> tuple[Storage, str]:
    """The storage and key that hold `key`: a recording stored before the storage port
    existed is an absolute path in the data directory (served and deleted in place)."""
    if key.startswith("/"):
        from callfleet.storage.local import LocalStorage

        path = Path(key)
        return LocalStorage(path.parent), path.name
    return storage, key


def open_storage(url: str) -> Storage:
    """The storage at `url`: `file:///PATH` or `s3://BUCKET/PREFIX`."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from callfleet.storage.local import LocalStorage

        return LocalStorage(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        from callfleet.storage.s3 import S3Storage

        return S3Storage(parts.netloc, unquote(parts.path))
    raise ValueError(f"unknown storage URL {url!r}: use file:///PATH or s3://BUCKET/PREFIX")
