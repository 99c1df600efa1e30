"""A local directory as storage: the embedded default (`file:///PATH`).

Objects are files under the root, created owner-only (a recording is a callee's
voice). `put_file` writes a temporary file and renames it into place, so a reader
never sees half an object and a crash leaves the old one or the new one; putting a
file that already is the object (a recording written straight into the data
directory) does nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from callfleet.storage.port import CHUNK_BYTES, ObjectMissing, StorageError, check_key

__all__ = ["LocalStorage"]


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"file://{self.root}"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        try:
            if target.exists() and source.resolve() == target.resolve():
                return
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"{self.describe()}: could not store {key}: {exc}") from exc

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        try:
            handle = self.path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(f"{self.describe()}: no object {key}") from None
        return _chunks(handle, start, end)

    def delete(self, key: str) -> bool:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"{self.describe()}: could not delete {key}: {exc}") from exc
        return True

    def presign(self, key: str, ttl_s: int) -> str | None:
        return None


def _chunks(handle: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    with contextlib.closing(handle):
        handle.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = handle.read(min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
