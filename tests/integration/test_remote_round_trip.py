"""Every core command against every real test server: backup -> restore -> check --read-data."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tuckbox.testing.servers import server_env
from tuckbox.testing.trees import compare_trees, sample_tree

from .conftest import Tuckbox

pytestmark = pytest.mark.servers


def _remote(kind: str) -> tuple[str, list[str], dict[str, str], list[str]]:
    """(repository URL, -o options, environment, secrets that must never be printed)."""
    sub = f"rt-{uuid.uuid4().hex[:12]}"
    if kind == "sftp":
        env = server_env("sshd")
        root = env["SFTP_ROOT"] if env["SFTP_ROOT"].startswith("/") else "/" + env["SFTP_ROOT"]
        url = f"sftp://{env['SFTP_USER']}@{env['SFTP_HOST']}:{env['SFTP_PORT']}{root.rstrip('/')}/{sub}"
        opts = [f"sftp.identity={env['SFTP_IDENTITY']}", f"sftp.known_hosts={env['SFTP_KNOWN_HOSTS']}",
                f"sftp.config={os.devnull}"]
        return url, opts, {}, []
    if kind in ("seaweedfs", "rclone-s3"):
        env = server_env(kind)
        aws = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
        return f"s3://{env['S3_BUCKET']}/{sub}", [f"s3.endpoint={env['S3_ENDPOINT']}"], aws, [env["AWS_SECRET_ACCESS_KEY"]]
    if kind == "webdav":
        env = server_env("rclone-webdav")
        creds = {"TUCKBOX_WEBDAV_USER": env["WEBDAV_USER"], "TUCKBOX_WEBDAV_PASSWORD": env["WEBDAV_PASSWORD"]}
        return f"webdav+{env['WEBDAV_URL'].rstrip('/')}/{sub}", [], creds, [env["WEBDAV_PASSWORD"]]
    if kind == "rclone":
        env = server_env("rclone")
        return (f"rclone:{env['RCLONE_REMOTE']}:{sub}",
                [f"rclone.binary={env['RCLONE_BIN']}", f"rclone.config={env['RCLONE_CONFIG']}"], {}, [])
    if kind == "tahoe":
        env = server_env("tahoe")
        host = env["TAHOE_URL"].removeprefix("http://").rstrip("/")
        cap = env["TAHOE_DIRCAP"]
        secrets = [p for p in cap.split(":")[2:] if p]
        return f"tahoe://{host}/{cap}/{sub}", [], {}, secrets
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["sftp", "seaweedfs", "rclone-s3", "webdav", "rclone", "tahoe"])
def test_round_trip(kind, tmp_path, monkeypatch):
    url, opts, env, secrets = _remote(kind)
    tb = Tuckbox(tmp_path, repo=url)  # the URL travels in TUCKBOX_REPOSITORY, never in argv
    tb.env.update(env)
    o = [a for opt in opts for a in ("-o", opt)]
    src = tmp_path / "src"
    sample_tree(src)
    outputs = [tb(*o, "init")]
    outputs.append(tb(*o, "backup", str(src), "--json"))
    (src / "added-later.txt").write_bytes(os.urandom(300_000))
    outputs.append(tb(*o, "backup", str(src), "--json"))
    snaps = tb(*o, "snapshots", "--json")
    outputs.append(snaps)
    assert len(snaps.json()) == 2
    outputs.append(tb(*o, "restore", "latest", "--target", str(tmp_path / "r")))
    assert compare_trees(src, Path(str(tmp_path / "r") + str(src))) == []
    check = tb(*o, "check", "--read-data", "--json")
    outputs.append(check)
    assert check.json()["ok"], check.out
    outputs.append(tb(*o, "diff", snaps.json()[0]["short_id"], "latest"))
    assert "added-later.txt" in outputs[-1].out
    outputs.append(tb(*o, "stats", "--json"))
    listing = tb(*o, "ls", "latest", str(src))
    outputs.append(listing)
    assert str(src / "added-later.txt") in listing.out.splitlines()
    dumped = tb(*o, "dump", "latest", str(src / "added-later.txt"))
    assert dumped.raw == (src / "added-later.txt").read_bytes()
    # forget every snapshot but a new one without that file, and prune: its data goes, the rest restores
    (src / "added-later.txt").unlink()
    outputs.append(tb(*o, "backup", str(src), "--json"))
    pruned = tb(*o, "forget", "--keep-last", "1", "--prune", "--max-unused", "0", "--json")
    outputs.append(pruned)
    assert pruned.json()["removed"] == 2
    assert pruned.json()["prune"]["plan"]["bytes_removed"] >= 300_000
    assert len(tb(*o, "snapshots", "--json").json()) == 1
    check = tb(*o, "check", "--read-data", "--json")
    outputs.append(check)
    assert check.json()["ok"] and not any("not in any index" in n for n in check.json()["notes"]), check.out
    outputs.append(tb(*o, "restore", "latest", "--target", str(tmp_path / "r2")))
    assert compare_trees(src, Path(str(tmp_path / "r2") + str(src))) == []
    # every index object lost on the server: repair index finds the packs again from their headers
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from tuckbox.backends import open_backend
    from tuckbox.types import ObjectType

    storage = open_backend(url, dict(opt.split("=", 1) for opt in opts))
    try:
        for info in list(storage.list(ObjectType.INDEX)):
            storage.remove(ObjectType.INDEX, info.name)
    finally:
        storage.close()
    tb.env["TUCKBOX_CACHE_DIR"] = str(tmp_path / "cache-after-loss")  # a machine that never saw them
    outputs.append(tb(*o, "check", expect=1))
    repaired = tb(*o, "repair", "index", "--json")
    outputs.append(repaired)
    assert repaired.json()["packs_reindexed"] >= 2 and repaired.json()["blobs_lost"] == 0
    check = tb(*o, "check", "--read-data", "--json")
    outputs.append(check)
    assert check.json()["ok"], check.out
    outputs.append(tb(*o, "restore", "latest", "--target", str(tmp_path / "r3")))
    assert compare_trees(src, Path(str(tmp_path / "r3") + str(src))) == []
    outputs.append(tb(*o, "unlock"))
    for res in outputs:
        for secret in secrets:
            assert secret not in res.out and secret not in res.err
