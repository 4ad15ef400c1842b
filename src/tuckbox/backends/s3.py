"""A repository in an S3 (or S3-compatible) bucket, via botocore (boto3's client layer).

URL: ``s3://bucket/prefix``. Endpoint, region and credentials come from the
standard AWS configuration (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws/{config,credentials},
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION) or
these options (``-o``); secrets are never options:

    s3.endpoint=URL              e.g. http://127.0.0.1:8333 for an S3-compatible server
    s3.region=NAME
    s3.profile=NAME
    s3.path-style=true|false     default: true with a custom endpoint, else automatic
    s3.connections=N             HTTP connection pool size (default 32)
    s3.multipart-threshold=SIZE  objects larger than this use multipart upload (default 64MiB)
    s3.part-size=SIZE            multipart part size (default 16MiB, at least 5MiB)
    s3.conditional-write=auto|true|false
    s3.checksum=auto|md5|crc32   how the server checks each uploaded body (default auto)
    s3.sign-payload=true|false   also sign each body's SHA-256 into the request (default false)

Never replacing an object: ``save`` sends ``If-None-Match: *`` (a conditional
PUT, and on CompleteMultipartUpload for big objects), which the server refuses
with 412 when the name exists, atomically. Some S3-compatible servers ignore the
header; before the first save the backend probes once (writes a probe object twice
under ``.tuckbox-probe-*`` and removes it; s3probe.py) and, if the second write was not
refused, falls back to HEAD-then-PUT. That fallback has a race between two
writers of the same name: harmless for content-addressed objects (same name,
same bytes), but two clients creating the same *lock* name could both succeed,
so on such servers lock exclusivity rests on the repository layer's
re-check after writing. ``s3.conditional-write=true|false`` skips the probe.

Every upload carries a checksum of its body, which the server verifies, so a
body damaged on the way is refused rather than stored: Content-MD5, or the
cheaper ``x-amz-checksum-crc32`` (five times faster to compute here) on servers
that verify it. SigV4's signed SHA-256 of the body does not count: SeaweedFS and
rclone accept a body that does not match it, and rclone accepts a wrong CRC32
too. So ``auto`` probes once, before the first single-request upload: a PUT
with the right CRC32 must succeed and one with a wrong CRC32 must be refused,
else Content-MD5 is used. Multipart parts always carry Content-MD5. The two
probes run at once, started when a repository is opened for writing
(``prepare_writes``), so its key derivation hides their round trips.

Bodies are sent as ``UNSIGNED-PAYLOAD`` (the signature covers the method, the
key and every header, the checksum header included, but not a SHA-256 of the
body), unless ``s3.sign-payload=true``. botocore otherwise hashes every body
over plain http, and over https too whenever the checksum is the CRC32 (it
recognises only Content-MD5): one more pass over all uploaded bytes on the
client, and one on a server that checks it, which guards against nothing
tuckbox does not already catch: the checksum refuses a body damaged on the way,
and every object is authenticated end to end (AEAD, names that are content
hashes), so a body altered on purpose is found by ``check`` and never restored.
botocore itself sends https uploads that carry Content-MD5 unsigned. The option
is there for a server that refuses unsigned bodies.

S3 PUTs are atomic: a reader sees the whole object or nothing. Ranged GETs are
used for partial loads; a server that answers a ranged GET with the whole
object (200) is tolerated by slicing locally. botocore clients are thread-safe,
and the connection pool is sized for parallel uploads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
import zlib
from typing import Any, Iterator

import botocore.exceptions as bexc
import botocore.session
from botocore.config import Config

from ..errors import ObjectExists, ObjectNotFound, PermanentError, TransientError, TuckboxError, UsageError
from ..redact import redact_url
from ..types import ObjectInfo, ObjectType
from .layout import check_name, object_path
from .s3probe import Probe, b64crc, conditional_put_honoured, crc32_checked, settle_at_exit
from .url import has_password, option, parse_bool, parse_int, parse_size

_BUCKET_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,255}$")  # what botocore sends at all
_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "Forbidden", "403", "401",
}
_RETRY_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "RequestTimeout",
    "InternalError", "ServiceUnavailable", "OperationAborted", "ConditionalRequestConflict",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_MIN_PART = 5 << 20
PROBE_WAIT = 5.0  # seconds closing the backend waits for a probe under way
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$")


class _Body:
    """An upload's bytes as the seekable file botocore takes, read as views: no copy of the body.

    botocore would otherwise need ``bytes`` (a pack is a view of a reused buffer, so a 16 MiB copy) and
    then wrap them in a ``BytesIO`` that copies again as it is sent. Measured: 20 sequential 16 MiB PUTs to
    SeaweedFS, 3.5 -> 2.7 s, client CPU 0.27 -> 0.15 s. botocore rewinds it (``seek(0)``) to retry.
    """

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, n: int | None = -1) -> memoryview:
        start, size = self._pos, len(self._view)
        end = size if n is None or n < 0 else min(size, start + n)
        self._pos = max(start, end)
        return self._view[start:end]

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _range_start(header: str | None) -> int | None:
    m = _CONTENT_RANGE.match(header or "")
    return int(m.group(1)) if m else None


class S3Backend:
    checks_whole_loads = True  # a body shorter than its Content-Length is a TransientError (load)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        path_style: bool | None = None,
        connections: int = 32,
        multipart_threshold: int = 64 << 20,
        part_size: int = 16 << 20,
        conditional_write: bool | None = None,
        checksum: str = "auto",
        sign_payload: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        if endpoint and has_password(endpoint):  # (botocore ignores it, and it would be shown in every message)
            raise UsageError(f"the S3 endpoint {redact_url(endpoint)} contains a password; remove it: credentials come "
                             "from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile")
        if endpoint and not region:
            region = "us-east-1"
        if path_style is None:
            path_style = bool(endpoint)
        if part_size < _MIN_PART:
            raise UsageError(f"s3.part-size must be at least 5MiB (S3's minimum), got {part_size} bytes")
        self.endpoint = endpoint
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._conditional = conditional_write
        if checksum not in ("auto", "md5", "crc32"):
            raise UsageError(f"s3.checksum must be auto, md5 or crc32, not {checksum!r}")
        self._crc32: bool | None = None if checksum == "auto" else checksum == "crc32"
        self._probe_lock = threading.Lock()
        self._probes: list[tuple[str, Probe]] = []  # probes under way (s3probe.py)
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto", "payload_signing_enabled": sign_payload},
            retries={"mode": "standard", "total_max_attempts": 2},
            max_pool_connections=connections,
            connect_timeout=15,
            read_timeout=120,
            tcp_keepalive=True,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            # botocore's own session, not boto3's: boto3 adds nothing a client uses here, and importing it (with
            # s3transfer) and building its client cost every command on an S3 repository ~25 ms more
            session = botocore.session.Session(profile=profile) if profile else botocore.session.Session()
            self._s3 = session.create_client("s3", endpoint_url=endpoint, config=config)
        except bexc.ProfileNotFound:
            name = profile or os.environ.get("AWS_PROFILE")
            raise UsageError(f"the AWS profile '{name}' does not exist; check s3.profile or AWS_PROFILE") from None
        except ValueError as e:
            raise UsageError(f"bad S3 settings for {self.location}: {e}") from None
        except bexc.BotoCoreError as e:
            raise UsageError(f"bad S3 settings for {self.location}: {type(e).__name__}") from None

    @classmethod
    def from_url(cls, url: str, options: dict[str, str]) -> "S3Backend":
        if not url.startswith("s3://"):
            raise UsageError(f"expected an s3://bucket/prefix URL, got '{url}'")
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        usage = ("use s3://bucket/prefix for S3 repositories (endpoint via -o s3.endpoint=URL or AWS_ENDPOINT_URL, "
                 "credentials via AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        if not bucket or "@" in bucket or ":" in bucket:  # (no host, port or credentials here: never echoed)
            raise UsageError(usage)
        if "?" in rest or "#" in rest:
            raise UsageError(f"the S3 URL has a '?' or '#' part; {usage}")
        if not _BUCKET_NAME.match(bucket):
            raise UsageError(
                f"'{bucket}' is not an S3 bucket name (letters, digits, '.', '-' and '_'); {usage}"
            )
        cw = option(options, "s3.conditional-write", None, "auto")
        ps = option(options, "s3.path-style")
        return cls(
            bucket,
            prefix,
            endpoint=option(options, "s3.endpoint"),
            region=option(options, "s3.region"),
            profile=option(options, "s3.profile"),
            path_style=parse_bool(ps, "s3.path-style") if ps else None,
            connections=parse_int(option(options, "s3.connections"), "s3.connections", 32),
            multipart_threshold=parse_size(option(options, "s3.multipart-threshold"), "s3.multipart-threshold", 64 << 20),
            part_size=parse_size(option(options, "s3.part-size"), "s3.part-size", 16 << 20),
            conditional_write=None if cw == "auto" else parse_bool(cw, "s3.conditional-write"),
            checksum=option(options, "s3.checksum", None, "auto"),
            sign_payload=parse_bool(option(options, "s3.sign-payload", None, "false"), "s3.sign-payload"),
        )

    def __repr__(self) -> str:
        return f"S3Backend({self.location!r}, endpoint={self.endpoint!r})"

    # -- helpers --------------------------------------------------------------

    def _key(self, type: ObjectType, name: str) -> str:
        return self._base + object_path(type, name)

    @staticmethod
    def _what(type: ObjectType, name: str) -> str:
        return "config" if type is ObjectType.CONFIG else f"{type.value}/{name}"

    def _map(self, e: BaseException, what: str) -> Exception:
        where = self.location + (f" at {self.endpoint}" if self.endpoint else "")
        if isinstance(e, TuckboxError):
            return e
        if isinstance(e, bexc.ClientError):
            err = e.response.get("Error", {}) or {}
            code = str(err.get("Code", ""))
            status = int((e.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
            if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
                return ObjectNotFound(f"{what} not found in repository {self.location}")
            if code == "NoSuchBucket":
                return PermanentError(
                    f"the bucket '{self.bucket}' does not exist at {self.endpoint or 'AWS'}; "
                    "create it or check the URL and s3.endpoint"
                )
            if code == "PreconditionFailed" or status == 412:
                return ObjectExists(f"{what} already exists in {self.location}")
            if code in _AUTH_CODES or status in (401, 403):
                return PermanentError(
                    f"access to {where} was denied ({code or status}); check the credentials "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile) and the bucket's permissions"
                )
            if code == "RequestTimeTooSkewed":
                return PermanentError(f"{where} rejected the request because this computer's clock is off; fix the clock")
            if code in _RETRY_CODES or status in (408, 429) or status >= 500:
                return TransientError(f"S3 error on {what} in {where}: {code or 'HTTP'} ({status}); try again later")
            return PermanentError(f"S3 refused {what} in {where}: {code or 'error'} (HTTP {status})")
        if isinstance(e, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
            return PermanentError(
                f"no S3 credentials for {self.location}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if isinstance(e, bexc.ProfileNotFound):
            return PermanentError(f"the AWS profile for {self.location} does not exist; check s3.profile or AWS_PROFILE")
        if isinstance(e, (bexc.ParamValidationError, bexc.InvalidRegionError)):
            return PermanentError(f"bad S3 request for {what} in {where}: {type(e).__name__}; check the bucket and options")
        if isinstance(e, (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ConnectionClosedError)):
            return TransientError(f"cannot connect to {where} ({type(e).__name__}); check the endpoint and network")
        if isinstance(e, (bexc.BotoCoreError, OSError, ConnectionError)):
            return TransientError(f"S3 transfer of {what} in {where} failed: {type(e).__name__}; try again")
        try:
            import urllib3.exceptions as uexc

            if isinstance(e, uexc.HTTPError):
                return TransientError(f"S3 transfer of {what} in {where} failed: {type(e).__name__}; try again")
        except ImportError:  # pragma: no cover - urllib3 always comes with botocore
            pass
        return TransientError(f"S3 error on {what} in {where}: {type(e).__name__}")

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as e:  # noqa: BLE001 - mapped to the tuckbox error tree
            raise self._map(e, what) from None

    @staticmethod
    def _md5(data: bytes | memoryview) -> str:
        """Content-MD5 of an upload body: the server refuses a body damaged on the way. Needed even over
        plain http, where SigV4 signs the body's SHA-256: SeaweedFS and rclone do not check that one
        (tests/backends/test_s3.py, test_body_damaged_in_transit_is_refused)."""
        return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()

    def _head(self, key: str, what: str) -> dict[str, Any] | None:
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=key)  # type: ignore[no-any-return]
        except Exception as e:  # noqa: BLE001
            err = self._map(e, what)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from None

    # -- what the server does (s3probe.py) -------------------------------------

    def prepare_writes(self) -> None:
        """Start finding out what the first save needs to know, in the background (a repository opened
        for writing calls this before its key derivation, which then hides the probes' round trips)."""
        with self._probe_lock:
            self._start_probes()

    def _start_probes(self) -> None:
        running = {name for name, _ in self._probes}
        args = (self._s3, self.bucket, self._base, self._map)
        if self._conditional is None and "conditional" not in running:
            self._probes.append(("conditional", Probe(lambda: conditional_put_honoured(*args))))
        if self._crc32 is None and "crc32" not in running:
            self._probes.append(("crc32", Probe(lambda: crc32_checked(*args))))
        if self._probes:
            settle_at_exit(self)

    def finish_probes(self) -> None:
        """Wait a little (``PROBE_WAIT``) for the probes under way: not forever on a stalled link, where one
        still running is left to its timeouts (and a fork that may follow gives way to threads:
        backends/fork.py, alone)."""
        with self._probe_lock:
            self._settle_probes(raise_error=False, wait=PROBE_WAIT)

    def _settle_probes(self, raise_error: bool, wait: float | None = None) -> None:
        """Wait for the probes under way (at most ``wait`` seconds: one still running is left running);
        a failed one leaves its answer unknown (asked again when needed)."""
        error: BaseException | None = None
        deadline = None if wait is None else time.monotonic() + wait
        running: list[tuple[str, Probe]] = []
        for name, probe in self._probes:
            if not probe.done(None if deadline is None else max(0.0, deadline - time.monotonic())):
                running.append((name, probe))
                continue
            try:
                answer = probe.result()
            except Exception as e:  # noqa: BLE001
                error = error or e
                continue
            if name == "conditional":
                self._conditional = answer
            else:
                self._crc32 = answer
        self._probes = running
        if error is not None and raise_error:
            raise error

    def _server(self) -> tuple[bool, bool]:
        """(conditional PUTs honoured, CRC32 checked): each probed once, both at once, before the first save."""
        if self._conditional is None or self._crc32 is None:
            with self._probe_lock:
                self._start_probes()
                self._settle_probes(raise_error=True)
        return bool(self._conditional), bool(self._crc32)

    # -- Backend --------------------------------------------------------------

    def _bucket_exists(self) -> bool:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
            return True
        except bexc.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("NoSuchBucket", "404", "NotFound") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self._map(e, f"the bucket '{self.bucket}'") from None
        except Exception as e:  # noqa: BLE001
            raise self._map(e, f"the bucket '{self.bucket}'") from None

    def exists(self) -> bool:
        if not self._bucket_exists():
            return False
        if not self._base:
            return True
        r = self._call("the repository prefix", self._s3.list_objects_v2, Bucket=self.bucket, Prefix=self._base, MaxKeys=1)
        return bool(r.get("KeyCount") or r.get("Contents"))

    def create(self) -> None:
        if self._bucket_exists():
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = self._s3.meta.region_name
        if region and region != "us-east-1" and not self.endpoint:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._s3.create_bucket(**kwargs)
        except bexc.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou",):
                return
            raise self._map(e, f"creating the bucket '{self.bucket}'") from None
        except Exception as e:  # noqa: BLE001
            raise self._map(e, f"creating the bucket '{self.bucket}'") from None

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        key = self._key(type, name)
        what = self._what(type, name)
        conditional, crc32 = self._server()
        if not conditional and self._head(key, what) is not None:
            raise ObjectExists(f"{what} already exists in {self.location}")
        if len(data) > self.multipart_threshold:
            self._save_multipart(key, what, data, conditional)
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": _Body(data)}
        if crc32:
            kwargs["ChecksumCRC32"] = b64crc(zlib.crc32(data))
        else:
            kwargs["ContentMD5"] = self._md5(data)
        if conditional:
            kwargs["IfNoneMatch"] = "*"
        self._call(what, self._s3.put_object, **kwargs)

    def _save_multipart(self, key: str, what: str, data: bytes | memoryview, conditional: bool) -> None:
        up = self._call(what, self._s3.create_multipart_upload, Bucket=self.bucket, Key=key)
        upload_id = up["UploadId"]
        try:
            view = memoryview(data)
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), 1):
                chunk = view[start : start + self.part_size]
                r = self._call(
                    what, self._s3.upload_part, Bucket=self.bucket, Key=key, UploadId=upload_id,
                    PartNumber=number, Body=_Body(chunk), ContentMD5=self._md5(chunk),
                )
                parts.append({"PartNumber": number, "ETag": r["ETag"]})
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket, "Key": key, "UploadId": upload_id, "MultipartUpload": {"Parts": parts},
            }
            if conditional:
                kwargs["IfNoneMatch"] = "*"
            elif self._head(key, what) is not None:
                raise ObjectExists(f"{what} already exists in {self.location}")
            self._call(what, self._s3.complete_multipart_upload, **kwargs)
        except BaseException:
            try:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; lifecycle rules clean up the rest
                pass
            raise

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(type, name)
        what = self._what(type, name)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        ranged = offset > 0 or length is not None
        if length is not None and length <= 0:
            if self._head(key, what) is None:
                raise ObjectNotFound(f"{what} not found in repository {self.location}")
            return b""
        if ranged:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            r = self._s3.get_object(**kwargs)
            body = r["Body"].read()
        except bexc.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidRange" or int(
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            ) == 416:
                return b""  # the object exists but the range starts at or past its end
            raise self._map(e, what) from None
        except Exception as e:  # noqa: BLE001
            raise self._map(e, what) from None
        expected = r.get("ContentLength")
        if expected is not None and len(body) != expected:
            raise TransientError(f"short read of {what} from {self.location} ({len(body)} of {expected} bytes); try again")
        if ranged:
            # Where does the body start? Content-Range says; a 200 without it is the whole object
            # (some servers ignore Range), and some answer 200 *with* a Content-Range and the range.
            start = _range_start(r.get("ContentRange"))
            if start is None:
                start = 0 if r["ResponseMetadata"]["HTTPStatusCode"] == 200 else offset
            if start != offset:
                skip = offset - start
                if skip < 0:
                    raise TransientError(f"the server returned the wrong range of {what} from {self.location}; try again")
                body = body[skip:] if length is None else body[skip : skip + length]
            elif length is not None and len(body) > length:
                body = body[:length]
        return body  # type: ignore[no-any-return]

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        what = self._what(type, name)
        h = self._head(self._key(type, name), what)
        if h is None:
            raise ObjectNotFound(f"{what} not found in repository {self.location}")
        return ObjectInfo(type, name, int(h["ContentLength"]))

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        if type is ObjectType.CONFIG:
            h = self._head(self._key(type, "config"), "config")
            if h is not None:
                yield ObjectInfo(type, "config", int(h["ContentLength"]))
            return
        prefix = f"{self._base}{type.value}/"
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000})
        it = iter(pages)
        while True:
            try:
                page = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001
                raise self._map(e, f"the {type.value} listing") from None
            for obj in page.get("Contents", ()) or ():
                rel = obj["Key"][len(prefix):]
                if type is ObjectType.PACK:
                    sub, _, name = rel.partition("/")
                    if sub != name[:2]:
                        continue
                else:
                    name = rel
                    if "/" in name:
                        continue
                try:
                    check_name(type, name)
                except UsageError:
                    continue
                yield ObjectInfo(type, name, int(obj["Size"]))

    def remove(self, type: ObjectType, name: str) -> None:
        key = self._key(type, name)
        what = self._what(type, name)
        if self._head(key, what) is None:
            raise ObjectNotFound(f"{what} not found in repository {self.location}")
        self._call(what, self._s3.delete_object, Bucket=self.bucket, Key=key)

    def suspend(self) -> None:
        """Close the pooled connections (before the process forks); the next request opens new ones."""
        self.close()

    def close(self) -> None:
        self.finish_probes()
        try:
            self._s3.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
