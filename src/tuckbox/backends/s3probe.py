"""What an S3-compatible server does with a conditional PUT and with a CRC32 checksum, found out by trying.

s3.py's module doc says why each answer matters. Each probe writes objects
named ``.tuckbox-probe-*`` under the repository's prefix and removes them. The
two run at once, each on a thread of its own (``Probe``), so together they take
three round trips instead of seven, and they can start before the first save
needs them (``S3Backend.prepare_writes``): a repository being opened for
writing starts them before its key derivation, which then hides them.
"""

from __future__ import annotations

import atexit
import base64
import secrets
import threading
import weakref
import zlib
from typing import Any, Callable

import botocore.exceptions as bexc

from ..errors import ObjectExists

MapError = Callable[[BaseException, str], Exception]

# backends whose probes may still run: at exit (a command that failed before closing its storage, e.g. on
# a wrong passphrase while its probes were under way) each waits a little for them, so that the probe
# objects are removed rather than left behind by threads cut off mid-request
_UNSETTLED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def settle_at_exit(backend: Any) -> None:
    """Have ``backend.finish_probes()`` called at interpreter exit (held weakly: a closed backend drops out)."""
    _UNSETTLED.add(backend)


@atexit.register
def _finish_all() -> None:
    for backend in list(_UNSETTLED):
        try:
            backend.finish_probes()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


def b64crc(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _status(e: bexc.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class Probe:
    """One probe running on a thread of its own; ``result`` waits for its answer or raises its error."""

    def __init__(self, fn: Callable[[], bool]) -> None:
        self._answer = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="tuckbox-s3-probe", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], bool]) -> None:
        try:
            self._answer = fn()
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits for the answer
            self._error = e

    def done(self, wait: float | None) -> bool:
        """Whether it has finished, waiting up to ``wait`` seconds (None: until it has)."""
        self._thread.join(wait)
        return not self._thread.is_alive()

    def result(self) -> bool:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._answer


def conditional_put_honoured(s3: Any, bucket: str, base: str, map_error: MapError) -> bool:
    """Does the server honour ``If-None-Match: *`` on PUT? The same probe object written twice."""
    key = f"{base}.tuckbox-probe-{secrets.token_hex(8)}"
    what = "a conditional-write probe"
    try:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")
        except bexc.ClientError as e:
            if _status(e) in (400, 501):
                return False  # the server rejects the header outright
            raise
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except bexc.ClientError as e:
            if isinstance(map_error(e, what), ObjectExists):
                return True
            raise
        return False
    except Exception as e:  # noqa: BLE001
        raise map_error(e, what) from None
    finally:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except Exception:  # noqa: BLE001 - best effort
            pass


def crc32_checked(s3: Any, bucket: str, base: str, map_error: MapError) -> bool:
    """Does the server verify ``x-amz-checksum-crc32`` on PutObject? The right CRC32 must be accepted and a
    wrong one refused."""
    body = b"tuckbox checksum probe " + secrets.token_bytes(16)
    right = zlib.crc32(body)
    keys = [f"{base}.tuckbox-probe-{secrets.token_hex(8)}" for _ in range(2)]
    try:
        try:
            s3.put_object(Bucket=bucket, Key=keys[0], Body=body, ChecksumCRC32=b64crc(right))
        except bexc.ClientError:
            return False  # the header itself is not accepted
        try:
            s3.put_object(Bucket=bucket, Key=keys[1], Body=body, ChecksumCRC32=b64crc(right ^ 1))
        except bexc.ClientError as e:
            return _status(e) == 400
        return False  # a wrong checksum was stored: the server does not check it
    except Exception as e:  # noqa: BLE001
        raise map_error(e, "an upload-checksum probe") from None
    finally:
        for key in keys:
            try:
                s3.delete_object(Bucket=bucket, Key=key)
            except Exception:  # noqa: BLE001 - best effort
                pass
