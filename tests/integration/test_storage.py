"""The storage port's contract, on both adapters: a local directory and S3 (moto's
S3 server on loopback, through boto3 as in production)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callfleet.storage import ObjectMissing, Storage, StorageError, open_storage, recording_key
from callfleet.storage.local import LocalStorage


@pytest.fixture(params=["local", "s3"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Storage]:
    if request.param == "local":
        yield open_storage(f"file://{tmp_path / 'objects'}")
        return
    s3: Any = request.getfixturevalue("s3_server")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    yield open_storage(f"s3://{s3.make_bucket()}/some/prefix")


def test_put_size_read_delete(storage: Storage, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes: several chunks
    source = tmp_path / "call.wav"
    source.write_bytes(data)
    key = recording_key("c-1", 2)
    assert key == "recordings/c-1-2.wav"
    assert storage.size(key) is None
    storage.put_file(key, source)
    storage.put_file(key, source)  # a retried upload replaces, harmlessly
    assert storage.size(key) == len(data)
    assert b"".join(storage.read(key, 0, len(data) - 1)) == data
    assert b"".join(storage.read(key, 1000, 70_999)) == data[1000:71_000]
    assert b"".join(storage.read(key, len(data) - 5, len(data) - 1)) == data[-5:]
    assert storage.delete(key) is True
    assert storage.delete(key) is False  # deleting again is not an error
    assert storage.size(key) is None
    with pytest.raises(ObjectMissing):
        b"".join(storage.read(key, 0, 10))


def test_presign_gives_a_working_url_on_object_storage_only(
    storage: Storage, tmp_path: Path
) -> None:
    source = tmp_path / "x.wav"
    source.write_bytes(b"RIFF-presigned")
    storage.put_file("recordings/p-1.wav", source)
    url = storage.presign("recordings/p-1.wav", 60)
    if isinstance(storage, LocalStorage):
        assert url is None
        return
    # Signature version 4, which every S3-compatible store accepts (moto does not
    # check signatures, so only the URL's shape and what it fetches are checked here).
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    got = httpx.get(url)
    assert (got.status_code, got.content) == (200, b"RIFF-presigned")


def test_keys_cannot_escape_the_storage(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "x.wav"
    source.write_bytes(b"x")
    for bad in ("../x.wav", "/etc/passwd", "a/../../b", "", "a//b"):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.put_file(bad, source)


def test_an_unreachable_store_raises_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: Any
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    source = tmp_path / "x.wav"
    source.write_bytes(b"x")
    missing_bucket = open_storage("s3://no-such-bucket-here/p")
    with pytest.raises(StorageError, match="s3://no-such-bucket-here/p"):
        missing_bucket.put_file("recordings/a.wav", source)
