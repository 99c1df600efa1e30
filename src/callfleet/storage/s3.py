"""Any S3-compatible object store as storage (`s3://BUCKET/PREFIX`), through boto3.

AWS S3, MinIO, Cloudflare R2, Backblaze B2 and the like. Endpoint, region and
credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`,
`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or a profile), which
boto3 reads itself, as every S3 tool does. Keys are stored under the URL's prefix.
Uploads use boto3's managed transfer (multipart for large files); a put of the same
key replaces the object, so a retried upload is harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from callfleet.storage.port import CHUNK_BYTES, ObjectMissing, StorageError, check_key

__all__ = ["S3Storage"]

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError as exc:  # pragma: no cover - boto3 is a dependency
    raise ImportError("S3 storage needs boto3: pip install boto3") from exc

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        config = botocore.config.Config(
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            signature_version="s3v4",
        )
        self.client: Any = client or boto3.client("s3", config=config)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, source: Path) -> None:
        name = self.name(key)
        if not source.is_file():
            raise FileNotFoundError(source)
        try:
            self.client.upload_file(str(source), self.bucket, name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StorageError(f"{self.describe()}: could not store {key}: {exc}") from exc
        except Exception as exc:  # boto3's transfer wraps failures in its own types
            raise StorageError(f"{self.describe()}: could not store {key}: {exc}") from exc

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.name(key))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageError(f"{self.describe()}: could not look up {key}: {exc}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageError(f"{self.describe()}: could not look up {key}: {exc}") from exc
        return int(head["ContentLength"])

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        try:
            got = self.client.get_object(
                Bucket=self.bucket, Key=self.name(key), Range=f"bytes={start}-{end}"
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectMissing(f"{self.describe()}: no object {key}") from None
            raise StorageError(f"{self.describe()}: could not read {key}: {exc}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageError(f"{self.describe()}: could not read {key}: {exc}") from exc
        body = got["Body"]
        return _stream(body)

    def delete(self, key: str) -> bool:
        existed = self.size(key) is not None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.name(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StorageError(f"{self.describe()}: could not delete {key}: {exc}") from exc
        return existed

    def presign(self, key: str, ttl_s: int) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.name(key)}, ExpiresIn=ttl_s
        )
        return url


def _stream(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
