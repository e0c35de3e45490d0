"""One reading of an input raster per file within a reprocessing pass (see scan_memo).

Kept apart from pipeline.io.ingest so that a pass with nothing new does not import
the geospatial stack to set it up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_SCANS: dict[tuple, object] | None = None   # see scan_memo


@contextmanager
def scan_memo() -> Iterator[None]:
    """Within the block, what a full reading of an input raster gives (elevation statistics,
    land-cover codes) is computed once per file and reused while the file is unchanged
    (same device, inode, size and modification time, so also after a rename).

    A reprocess checks the basin's inputs before it registers new imagery, checks the new
    file, and the assessment it runs checks everything again: on 5e7 cells the second
    readings of the DEM and land cover took 2.5 s. Outside the block every check reads.
    """
    global _SCANS
    outer = _SCANS
    if outer is None:
        _SCANS = {}
    try:
        yield
    finally:
        _SCANS = outer


def scanned(what: str, path: Path, params: tuple, read: Callable[[], object]):
    """``read()`` (a full reading of the file at `path` giving `what` for `params`), or its
    result from earlier in the enclosing :func:`scan_memo` block."""
    if _SCANS is None:
        return read()
    st = os.stat(path)
    key = (what, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, params)
    if key not in _SCANS:
        _SCANS[key] = read()        # an error is raised, not kept: the next check reads again
    return _SCANS[key]


def copied(src: Path, dst: Path) -> None:
    """Within a :func:`scan_memo` block, `dst` (a copy of `src` just made, modification time
    kept: ``shutil.copy2``) gives what `src` gave: a new vintage registered into the data store
    is not read again by the assessment of the same pass (0.03-0.15 s per land cover)."""
    if _SCANS is None:
        return
    s, d = os.stat(src), os.stat(dst)
    if (s.st_size, s.st_mtime_ns) != (d.st_size, d.st_mtime_ns):
        return
    same = (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)
    for key in [k for k in _SCANS if k[1:5] == same]:
        _SCANS[(key[0], d.st_dev, d.st_ino) + key[3:]] = _SCANS[key]
