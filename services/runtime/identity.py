"""The replica's stable identity: the lease holder name a restarted runtime shares with its previous start.

A restarted replica that keeps its name finds the runs it held (their leases still live) and takes them back at
once (resume.Resumer.reclaim), instead of leaving them silent until their leases expire. The name is the
`replica_id` setting when set; otherwise it is kept in a file in the data directory, written on the first start.
Two replicas must never share a data directory (nor an explicit id): they would take each other's runs when
either restarts.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

FILE_NAME = "runtime-replica-id"


def stable_replica_id(data_dir: Path) -> str:
    """The id kept in `<data_dir>/runtime-replica-id`, created (atomically, once) when missing."""
    path = data_dir / FILE_NAME
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = f"runtime-{uuid.uuid4().hex[:12]}"
    # Written aside and linked in place: two first starts racing agree on whichever link landed first.
    scratch = data_dir / f".{FILE_NAME}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    scratch.write_text(fresh + "\n")
    try:
        os.link(scratch, path)
    except FileExistsError:
        pass
    finally:
        scratch.unlink()
    return path.read_text().strip()
