"""check --read-data-subset: the N/M parts cover every pack exactly once, a damaged pack is found by the
part that holds it (and only read there), and a bad spec is a usage error."""

from __future__ import annotations

import os
from pathlib import Path

from tuckbox.backends.local import LocalBackend
from tuckbox.maintenance.check import pack_subset
from tuckbox.repository.repo import Repository
from tuckbox.types import BlobType

from .conftest import Tuckbox


def test_parts_cover_every_pack_once_and_find_the_damage(tb: Tuckbox, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i}").write_bytes(os.urandom(600_000))
    tb("init", "--pack-size", "1MiB")
    tb("backup", str(src))
    packs = sorted(f.name for f in (Path(tb.repo) / "data").rglob("*") if f.is_file())
    assert len(packs) >= 6
    parts = [pack_subset(f"{n}/3")(packs) for n in (1, 2, 3)]
    assert set().union(*parts) == set(packs) and sum(map(len, parts)) == len(packs)  # disjoint, complete
    read = [tb("check", "--read-data-subset", f"{n}/3", "--json").json() for n in (1, 2, 3)]
    assert all(r["ok"] and r["read_data"] for r in read)
    assert [r["counts"]["packs_read"] for r in read] == [len(p) for p in parts]
    assert f"{len(parts[0])} of {len(packs)} packs' data read and verified (subset 1/3)" in tb(
        "check", "--read-data-subset", "1/3").out

    # the victim is a data pack: every check reads the trees (from storage), so a damaged tree pack would
    # fail the check of every part (it did, in about a third of the runs)
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().rstrip(b"\n"))
    data_packs = {name for name, p in repo.index.packs.items() if p.kind is BlobType.DATA}
    repo.close()
    # pack names are content hashes: with a handful of packs a part may hold no data pack (rarely)
    k = next(n for n in (1, 2, 0) if parts[n] & data_packs)
    clean = (k + 1) % 3
    victim = sorted(parts[k] & data_packs)[0]
    path = next(f for f in (Path(tb.repo) / "data").rglob(victim))
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    tb("check", "--read-data-subset", f"{clean + 1}/3")  # the damaged pack is not in that part: not read, no error
    bad = tb("check", "--read-data-subset", f"{k + 1}/3", expect=1)
    assert victim in bad.err
    assert tb("check", "--read-data-subset", "100%", expect=1).code == 1
    for spec in ("0/3", "4/3", "1/0", "x", "0%", "101%", "1/3/4"):
        r = tb("check", "--read-data-subset", spec, expect=2)
        assert "--read-data-subset" in r.err and len(r.err.strip().splitlines()) == 1
    both = tb("check", "--read-data", "--read-data-subset", "1/3", expect=2)  # (it read only the subset)
    assert "give one of them" in both.err and len(both.err.strip().splitlines()) == 1


def test_a_percentage_reads_that_share_of_the_packs_rounded_up_never_none(tb: Tuckbox, tmp_path: Path) -> None:
    # it drew each pack with probability P: 10 % of a repository of 3 packs read no pack at all 73 % of the
    # time, and check said "no errors found" having verified nothing
    names = [f"{i:064x}" for i in range(25)]
    assert len(pack_subset("10%")(names)) == 3 and len(pack_subset("0.1%")(names)) == 1
    assert pack_subset("100%")(names) == set(names) and pack_subset("10%")([]) == set()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    tb("init")
    tb("backup", str(src))
    packs = [f for f in (Path(tb.repo) / "data").rglob("*") if f.is_file()]
    assert len(packs) == 2  # a data pack and a tree pack
    for _ in range(5):
        assert tb("check", "--read-data-subset", "10%", "--json").json()["counts"]["packs_read"] == 1
    for victim in packs:  # whichever pack 10 % draws is damaged
        data = bytearray(victim.read_bytes())
        data[50] ^= 1
        victim.chmod(0o600)
        victim.write_bytes(bytes(data))
    assert tb("check", "--read-data-subset", "10%", expect=1).code == 1


def test_a_rate_below_one_byte_is_refused_not_taken_as_no_limit(tb: Tuckbox) -> None:
    tb("init")
    for rate in ("0.1", "0.5B"):
        r = tb("--limit-upload", rate, "snapshots", expect=2)
        assert "less than one byte per second" in r.err and "--limit-upload" in r.err
        assert len(r.err.strip().splitlines()) == 1
    assert tb("--limit-download", "0", "snapshots").code == 0  # 0: no limit
    assert tb("--limit-download", "0.5KiB", "snapshots").code == 0  # 512 B/s


def test_a_storage_that_goes_down_is_not_reported_as_damage_pack_by_pack(tb: Tuckbox, tmp_path: Path) -> None:
    """check --read-data with the server gone after the listing: every pack "cannot be read" was one error line
    each (thousands for a big repository) with nothing saying that no damage was found. Now ten are named,
    the rest counted in one line, and a note says the storage, not the data, failed; the exit is still 1."""
    from tuckbox.maintenance.check import UNREADABLE_SHOWN

    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(600_000))
    tb("init", "--pack-size", "1MiB")
    tb("backup", str(src))
    packs = [f for f in (Path(tb.repo) / "data").rglob("*") if f.is_file()]
    data_packs = len(packs) - 1  # (one tree pack)
    assert data_packs > UNREADABLE_SHOWN + 2
    env = {"TUCKBOX_TEST_FAULTS": "down_data=1,retry_delay=0.001"}
    res = tb("check", "--read-data", env=env, expect=1)
    named = [ln for ln in res.err.splitlines() if ln.startswith("error: pack ") and ": cannot be read: " in ln]
    assert len(named) == UNREADABLE_SHOWN, res.err
    unread = tb("--json", "check", "--read-data", env=env, expect=1).json()
    total = unread["counts"]["packs_unreadable"]
    assert total >= data_packs
    assert f"error: {total - UNREADABLE_SHOWN} more pack(s) cannot be read from the storage" in res.err
    assert f"note: {total} of {len(packs)} pack(s) could not be read from the storage" in res.out
    assert "not damage found in the data" in res.out and "damaged" not in res.err
    assert tb("check", "--read-data").code == 0  # the storage back: nothing was damaged
