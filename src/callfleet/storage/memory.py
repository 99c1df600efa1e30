"""An in-memory storage: the fake of the storage port, for unit tests of its neighbours.

Users can use it in their own tests too. `fail_puts` makes the next N `put_file`
calls raise `StorageError`, to exercise retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from callfleet.storage.port import CHUNK_BYTES, ObjectMissing, StorageError, check_key

__all__ = ["MemoryStorage"]


class MemoryStorage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_puts = 0

    def describe(self) -> str:
        return "memory://"

    def put_file(self, key: str, source: Path) -> None:
        if self.fail_puts > 0:
            self.fail_puts -= 1
            raise StorageError(f"memory://: refused to store {key} (fail_puts)")
        self.objects[check_key(key)] = source.read_bytes()

    def size(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        data = self.objects.get(key)
        if data is None:
            raise ObjectMissing(f"memory://: no object {key}")
        part = data[start : end + 1]
        return iter([part[i : i + CHUNK_BYTES] for i in range(0, len(part), CHUNK_BYTES)])

    def delete(self, key: str) -> bool:
        return self.objects.pop(key, None) is not None

    def presign(self, key: str, ttl_s: int) -> str | None:
        return None
