"""Durable writes: a file's bytes reach the disk before a rename makes the file visible.

Every writer of the package writes a temporary name and renames it into place, so a
killed run never leaves a half-written file under a final name. A rename is not a
flush, though. After a power cut or a kernel crash, a renamed file can come back with
its name but without its data (zero length, or blocks of zeros). An unattended job
that moves imagery out of the inbox (pipeline.reprocess) and publishes outputs must
therefore call fsync in this order:

1. the file's data (``fsync`` of the file) before the rename that makes it visible;
2. the directory holding the new name (``fsync`` of the directory) before anything
   relies on the rename, e.g. before the inbox copy of imagery is deleted.

:func:`replace` does both for one file and :func:`sync_tree` does the first for a
whole staged folder (pipeline.io.outputs.Publisher, cache entries).

``ECOCREDIT_FSYNC=0`` turns the flushes off, e.g. for scratch runs on a file system
where fsync is slow. Renames stay atomic; only a power cut can then lose recent
files. A file system that cannot fsync a directory (some network mounts answer
EINVAL) is skipped silently.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# errors of file systems that do not support fsync on this kind of file (not failures)
_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS}


def enabled() -> bool:
    """Whether fsync is called (``ECOCREDIT_FSYNC`` unset, or anything but 0/no/false/off)."""
    return os.environ.get("ECOCREDIT_FSYNC", "1").strip().lower() not in {"0", "no", "false", "off"}


def fsync_path(path: Path) -> None:
    """Flush one file's data, or one directory's entries, to the disk."""
    if not enabled():
        return
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def replace(tmp: Path, dst: Path) -> None:
    """``os.replace(tmp, dst)`` with tmp's data flushed before and dst's folder after."""
    fsync_path(tmp)
    os.replace(tmp, dst)
    fsync_path(Path(dst).parent)


def write_text(path: Path, text: str, tmp: Path | None = None) -> None:
    """Write `text` (UTF-8) to a temporary name beside `path`, flush it and rename it."""
    path = Path(path)
    tmp = tmp or path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sync_tree(root: Path) -> int:
    """Flush every file and directory below `root` (root included); return the count.

    Files already on the disk (e.g. restored by hard link from the cache) cost little.
    """
    if not enabled():
        return 0
    n = 0
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                fsync_path(Path(p))
                n += 1
        fsync_path(Path(folder))
        n += 1
    return n
