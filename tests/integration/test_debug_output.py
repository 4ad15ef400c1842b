"""TUCKBOX_DEBUG=1 shows every library's log, and the internal-error message asks users to paste it into a bug
report: it must not hold a secret (botocore logs request headers, httpx a Tahoe-LAFS request's URL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuckbox.cli import main as cli_main

from .conftest import Tuckbox

DIRCAP = "URI:DIR2:" + "a" * 26 + ":" + "b" * 52
SECRET_KEY = "secret-key-" + "k" * 29
SESSION_TOKEN = "session-token-" + "t" * 40

_S3_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
              b"<Message>Access Denied</Message></Error>")


@contextmanager
def _server(status: int, body: bytes, content_type: str) -> Iterator[str]:
    """A local HTTP server answering every request with ``status`` (what a Tahoe-LAFS node or an S3 endpoint that
    refuses says); yields its host:port."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="stub-http", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_debug_output_has_no_tahoe_capability(tb: Tuckbox) -> None:
    with _server(404, b"No such child", "text/plain") as node:
        res = tb("-r", f"tahoe://{node}/repo", "snapshots", env={"TUCKBOX_DEBUG": "1", "TUCKBOX_TAHOE_CAP": DIRCAP},
                 expect=1)
    assert "HTTP Request" in res.err and "URI:DIR2:<redacted>" in res.err  # (the requests were logged)
    assert "a" * 26 not in res.err + res.out and "b" * 52 not in res.err + res.out


def test_debug_output_has_no_s3_credentials(tb: Tuckbox) -> None:
    env = {"TUCKBOX_DEBUG": "1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_REGION": "us-east-1"}
    with _server(403, _S3_DENIED, "application/xml") as endpoint:
        res = tb("-r", "s3://bucket/repo", "-o", f"s3.endpoint=http://{endpoint}", "snapshots", env=env, expect=1)
    assert "botocore" in res.err and "X-Amz-Security-Token" in res.err  # (the request headers were logged)
    assert "was denied" in res.err
    for secret in (SESSION_TOKEN, SECRET_KEY, "t" * 40):
        assert secret not in res.err + res.out


def test_a_debug_traceback_has_no_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(args: object) -> int:
        raise RuntimeError(f"GET http://127.0.0.1:3456/uri/{DIRCAP.replace(':', '%3A')}/x failed")

    monkeypatch.setenv("TUCKBOX_DEBUG", "1")
    monkeypatch.setattr(cli_main, "_debug_logging", lambda: None)  # (the process's logging stays as it is)
    monkeypatch.setattr("tuckbox.cli.cmd_unlock.run", fails)
    assert cli_main.main(["-r", "/nonexistent", "unlock"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err and "internal error" in err
    assert "a" * 26 not in err and "b" * 52 not in err
