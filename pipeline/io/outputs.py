"""Where outputs go, declared once, and how a run publishes them atomically.

A run writes into a staging folder beside the published one
(`outputs/.<basin>.staging-<pid>`); only when everything is written does it swap
the staging folder into place (`outputs/<basin>`). A failed or killed run leaves
the previously published outputs untouched; the next run removes its debris.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import OutputError
from pipeline.io import durable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputLayout:
    """The registry of output paths inside one run folder."""

    root: Path
    basin: str

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def hydrology(self) -> Path:
        return self.root / "hydrology"

    def hydrology_of(self, vintage: str | None) -> Path:
        """The basin's hydrology folder, or (`vintage`) that of the vintage's as-built DEM."""
        return self.hydrology if vintage is None else self.indicators(vintage) / "hydrology"

    def indicators(self, vintage: str) -> Path:
        return self.root / "indicators" / vintage

    @property
    def rasters(self) -> Path:
        return self.root / "rasters"

    def credit_raster(self, project_id: str) -> Path:
        return self.rasters / f"credits_{safe_filename(project_id)}.tif"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str) -> Path:
        return self.tables / name

    @property
    def geopackage(self) -> Path:
        return self.root / f"{self.basin}.gpkg"

    @property
    def report(self) -> Path:
        return self.root / "report"


def safe_filename(name: str) -> str:
    """A project id as a plain file name: path separators and shell characters replaced."""
    keep = []
    for ch in str(name):
        keep.append(ch if (ch.isalnum() or ch in "-_.") else "_")
    out = "".join(keep).strip(".") or "_"
    return out[:100]


class Publisher:
    """Stage a run's outputs and publish them in one rename."""

    def __init__(self, out_dir: Path, basin: str):
        self.final = Path(out_dir).resolve()
        self.parent = self.final.parent
        self.staging = self.parent / f".{self.final.name}.staging-{os.getpid()}"
        self.layout = OutputLayout(self.staging, basin)

    def __enter__(self) -> "Publisher":
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._clean_debris()
            if self.staging.exists():
                shutil.rmtree(self.staging)
            self.staging.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create the output folder ({exc.strerror or exc})",
                              path=self.parent, fix="choose a writable --out folder") from None
        return self

    def _clean_debris(self) -> None:
        old = self.parent / f".{self.final.name}.previous"
        if old.exists() and not self.final.exists():
            # a run died between the two renames of publish(): restore the previous outputs
            os.replace(old, self.final)
            log.warning("restored previous outputs of %s after an interrupted publication", self.final)
        for p in self.parent.glob(f".{self.final.name}.staging-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
                continue
            shutil.rmtree(p, ignore_errors=True)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)

    def publish(self) -> Path:
        """Swap the staging folder into place. Every staged file is flushed to the disk first
        and the parent folder after the renames (pipeline.io.durable), so a power cut
        leaves either the previous outputs or the new ones, never names without data."""
        old = self.parent / f".{self.final.name}.previous"
        try:
            durable.sync_tree(self.staging)
        except OSError as exc:
            raise OutputError(f"cannot flush the staged outputs to the disk ({exc.strerror or exc})",
                              path=self.staging, fix="check the disk and free space of the output folder") from None
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.staging, self.final)
        durable.fsync_path(self.parent)
        shutil.rmtree(old, ignore_errors=True)
        self.layout = OutputLayout(self.final, self.layout.basin)
        return self.final

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)


def remove_orphans(parent: Path, prefix: str) -> list[Path]:
    """Remove the folders ``parent/<prefix><pid>-<random>`` whose process `pid` is gone (a
    run killed by SIGKILL, the out-of-memory killer or a reboot cannot remove its own);
    return them. `prefix` may hold glob wildcards (``pipeline-*-``); names with more
    parts (another basin's ``.work-a-b-<pid>-...`` for ``.work-a-``) and folders of live
    processes or other users are left alone."""
    import fnmatch

    removed = []
    for p in Path(parent).glob(f"{prefix}*"):
        head, pid, rand = (p.name.rsplit("-", 2) + ["", ""])[:3]
        if not (fnmatch.fnmatchcase(f"{head}-", prefix) and pid.isdigit() and rand and p.is_dir()):
            continue
        if int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
