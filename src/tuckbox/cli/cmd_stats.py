"""Show how much is stored versus backed up: sizes, counts, compression and deduplication."""

from __future__ import annotations

import argparse
import sys

from ..maintenance.stats import compute_stats
from .common import emit_json, human, open_repository, opt

HELP = "show repository statistics"


def register(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    st = compute_stats(repo)
    repo.close()
    full = repo.is_full()
    if opt(args, "json"):
        doc = st.as_dict()
        if not full:  # what only the snapshots tell: unknown to a write-only key (null, not 0)
            doc.update({k: None for k in _FROM_SNAPSHOTS if k in doc})
        emit_json(doc)
        return 0
    unknown = "unknown (write-only key)"
    if not full:
        print("note: a write-only key cannot read snapshots; sizes below are what is stored", file=sys.stderr)
    print(f"snapshots:            {st.snapshots if full else unknown}")
    print(f"stored in repository: {human(st.stored_bytes)} in {st.packs} packs")
    print(f"unique data:          {human(st.unique_bytes)} in {st.blobs} chunks ({st.data_blobs} data, {st.tree_blobs} trees)")
    print(f"compression ratio:    {st.compression_ratio:.2f}x (unique data / stored)")
    if not full:
        print(f"original size:        {unknown}")
        return 0
    print(f"original size:        {human(st.original_bytes)} over all snapshots, {human(st.latest_original_bytes)} in the latest")
    print(f"dedup ratio:          {st.dedup_ratio:.2f}x (original / unique file data, {human(st.unique_data_bytes)})")
    print(f"total saving:         {st.space_saving_ratio:.2f}x (original / stored)")
    return 0


_FROM_SNAPSHOTS = ("snapshots", "original_bytes", "latest_original_bytes", "dedup_ratio", "space_saving_ratio")
