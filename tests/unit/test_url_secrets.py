"""A password typed into a repository URL is refused without being repeated, whatever characters it holds: an
unencoded '/', '#', '?' or '@' in it makes the URL parse as something else (host 'user', port 'pa'), which
used to print the whole URL, password and all, or stop with an internal error."""

from __future__ import annotations

import pytest

from tuckbox.backends.url import has_password
from tuckbox.cli.main import main

PASSWORDS = ["Pw/Zq81xk", "Pw#Zq81xk", "Pw?Zq81xk", "Pw@Zq81xk", "Zq81xk"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("scheme", ["sftp", "webdav+https"])
def test_a_password_in_the_url_is_refused_unshown(scheme: str, password: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "-r", f"{scheme}://user:{password}@127.0.0.1:1/repo", "snapshots"]) == 2
    res = capsys.readouterr()
    assert "password" in res.err and "internal error" not in res.err
    for part in ("Zq81xk", "Pw"):
        assert part not in res.err and part not in res.out


def test_a_query_string_is_refused_unshown(capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("webdav+https://127.0.0.1:1/repo?token=Zq81xk", "sftp://127.0.0.1:1/repo?password=Zq81xk"):
        assert main(["-r", url, "snapshots"]) == 2
        err = capsys.readouterr().err
        assert "'?' or '#'" in err and "Zq81xk" not in err


def test_a_webdav_address_with_a_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-r", "webdav+https://127.0.0.1:dav/repo", "snapshots"]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "internal error" not in err


def test_an_s3_endpoint_with_a_password_is_refused_unshown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-r", "s3://bucket/repo", "-o", "s3.endpoint=http://AKID:Zq/81xk@127.0.0.1:1", "snapshots"]) == 2
    err = capsys.readouterr().err
    assert "password" in err and "Zq" not in err and "81xk" not in err


def test_a_port_or_an_at_in_the_path_is_no_password() -> None:
    assert not has_password("webdav+https://cloud.example:8443/remote.php/dav/files/me@example.com/backups")
    assert not has_password("sftp://me@host:22/srv/backups/laptop@home")
    assert has_password("sftp://me:secret@host/srv") and has_password("sftp://me:se/cret@host/srv")
