"""A content-addressed cache of intermediate results, so reprocessing does only what changed.

Layout (one cache per basin, beside the published outputs)::

    outputs/.cache/<basin>/<step>/<key>/         one entry: the step's files + meta.json
    outputs/.cache/<basin>/<step>/.<key>.tmp-<pid>/  an entry being written (debris if pid is dead)
    outputs/.cache/<basin>/hashes.json            memo of input sha256 by (path, size, mtime, inode)
    outputs/.cache/<basin>/output_hashes.json     memo of the last run's output sha256 by inode (manifest)
    outputs/.cache/<basin>/published.json         run key of the last published run (pipeline.reprocess)
    outputs/.cache/<basin>/runs.json              entries used by the last KEEP_RUNS runs (pruning)

A key is the sha256 of a canonical JSON document of everything the step's result
depends on: the content hashes of its inputs (never their paths), the method
parameters, the grid, the chunk size and :func:`code_version` (a hash of every
source file of the package and of the land-cover class tables). An entry appears
by one directory rename, so a killed run never leaves a half-written entry under
its key. Entries are restored into a run folder by hard links (copies where the
file system refuses links); every output writer replaces files by rename, so a
published file and its cache entry never change in place.

Steps cached (keys in :class:`StepCache`):

``aligned``    one input raster (DEM, a land-cover vintage) warped onto the basin grid:
               the source file's bytes, the grid and the warp options; its meta holds
               the aligned file's sha256, which the keys below use.
``hydrology``  aligned DEM, basin boundary / outlets, supplied stream layer, parameters.
``landscape``  the hydrology key + the aligned land cover of one vintage + its scheme.
``sites``      the landscape key of one vintage + its name and year + sites and layers.
``credit_raster``  one project's credit raster: its sites, their credit rows, the grid and
               the baseline / assessment land cover under its window (one entry per
               project; see :meth:`StepCache.credit_raster`).

Scoring, the GeoPackage and the report depend on every vintage and are always
recomputed (the report reuses unchanged figures, pipeline.report.figures).

Below the ``landscape`` step, a :class:`BlockMemo` (``outputs/.cache/<basin>/blocks/``)
serves the chunk-local block functions of :mod:`pipeline.ops.landcover` (disk shares,
distance to streams, the two patch-labelling passes): its key is the sha256 of the
function's name and parameters, :func:`code_version` and the bytes, shape and dtype of
the (halo-padded) input block, so a new vintage that differs from an earlier one in
a few chunks recomputes only the blocks whose padded input changed. Connectivity is
not memoised: it is basin-wide (on the Yongding demo all patches form one component
within reach of each other), so a changed patch changes every patch's dPC.
Hydrology entries hold the rasters already converted to COG (as published), so a run
that restores them has nothing to convert; hydrology and landscape entries also hold
each raster's QGIS style sidecar (``.qml``), so a run that restores them does not read
the rasters again to style them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.config import REPO_ROOT
from pipeline.errors import OutputError
from pipeline.io import durable
from pipeline.runlog import sha256

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
CACHE_FORMAT = 1
STEPS = ("aligned", "hydrology", "landscape", "sites", "credit_raster")   # folders of step entries
KEEP_RUNS = 3   # step entries used by none of the last KEEP_RUNS runs are removed (StepCache.close)


def digest(obj) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys; Paths, dates and numpy as text)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return repr(float(o))
    if isinstance(o, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(o).tobytes()).hexdigest()
    return str(o)


# Modules the cached steps (hydrology, land-cover and site indicators) never run: editing
# them must not invalidate the cache. Everything else in the package is part of the key.
NOT_IN_STEPS = ("report/", "scoring/", "deliver.py", "history.py", "reprocess.py", "cli.py",
                "warmup.py", "demo.py", "__main__.py", "cache.py")
_CODE_VERSION: dict[bool, str] = {}


def code_version(steps_only: bool = False) -> str:
    """Hash of the package's .py files and the land-cover class tables.

    `steps_only` leaves out :data:`NOT_IN_STEPS` (the key of cached steps); the
    default covers all code (the key of a whole run).
    """
    if steps_only not in _CODE_VERSION:  # once per process: the code does not change under a run
        h = hashlib.sha256(f"format {CACHE_FORMAT}".encode())
        files = sorted(PACKAGE.rglob("*.py")) + sorted((REPO_ROOT / "configs" / "landcover").glob("*.yaml"))
        for p in files:
            if steps_only and p.suffix == ".py" and \
                    p.relative_to(PACKAGE).as_posix().startswith(NOT_IN_STEPS):
                continue
            h.update(str(p.relative_to(REPO_ROOT)).encode())
            h.update(p.read_bytes())
        _CODE_VERSION[steps_only] = h.hexdigest()
    return _CODE_VERSION[steps_only]


STYLE_CODE = ("report/cog.py", "report/styles.py")


def style_code() -> str:
    """Hash of the code that writes raster style sidecars (:data:`STYLE_CODE`). Step keys
    leave ``report/`` out, so a sidecar kept in a step entry is used only while this is
    unchanged (:meth:`StepCache.restore_styled`)."""
    h = hashlib.sha256()
    for rel in STYLE_CODE:
        h.update((PACKAGE / rel).read_bytes())
    return h.hexdigest()


def frame_digest(df: pd.DataFrame | None) -> str | None:
    """Content hash of a (Geo)DataFrame: geometries as WKB, attributes as values."""
    if df is None:
        return None
    h = hashlib.sha256()
    cols = [c for c in df.columns if c != "geometry"]
    h.update(json.dumps(cols).encode())
    if "geometry" in df.columns:
        import shapely

        for g in shapely.to_wkb(np.asarray(df.geometry.values), hex=False, output_dimension=2):
            h.update(b"\0" if g is None else g)
        crs = getattr(df, "crs", None)
        h.update(str(crs.to_wkt() if crs is not None else "").encode())
    for c in cols:
        h.update(json.dumps([None if _isna(v) else v for v in df[c].tolist()], default=str).encode())
    return h.hexdigest()


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


class HashMemo:
    """sha256 of files, remembered by (path, size, mtime_ns, inode) in a JSON file.

    ``by_inode``: remembered by the file itself (device and inode, with size and
    mtime_ns) whatever its path, and :meth:`save` keeps only the files asked for since
    the memo was opened. For a run's outputs: a file restored from the cache or reused
    from the previous report is a hard link, the same inode under a new staging path,
    and every writer replaces a file by rename (a new inode), never in place.
    """

    def __init__(self, path: Path | None, by_inode: bool = False):
        self.path = path
        self.by_inode = by_inode
        self.memo: dict[str, dict] = {}
        self.asked: set[str] = set()
        self.dirty = False
        if path is not None and path.is_file():
            try:
                self.memo = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.memo = {}

    def _key(self, p: Path, st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}" if self.by_inode else str(p)

    def __call__(self, p: Path) -> str:
        p = Path(p).resolve()
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = self._key(p, st)
        self.asked.add(key)
        got = self.memo.get(key)
        if got and got.get("stamp") == stamp:
            return got["sha256"]
        h = sha256(p)
        self.memo[key] = {"stamp": stamp, "sha256": h}
        self.dirty = True
        return h

    def seed(self, p: Path, digest: str) -> None:
        """Record `digest` as the sha256 of `p` as it is now (a file known by its cache entry)."""
        p = Path(p).resolve()
        st = p.stat()
        self.memo[self._key(p, st)] = {"stamp": [st.st_size, st.st_mtime_ns, st.st_ino], "sha256": digest}
        self.dirty = True

    def save(self) -> None:
        if self.path is None:
            return
        if self.by_inode and set(self.memo) != self.asked:
            self.memo = {k: v for k, v in self.memo.items() if k in self.asked}
            self.dirty = True
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        durable.write_text(self.path, json.dumps(self.memo, indent=0, sort_keys=True))
        self.dirty = False


@dataclass
class CacheStats:
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)


class StepCache:
    """Entries of one basin's cache; see the module documentation."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.stats = CacheStats()
        self.hashes = HashMemo(None)   # aligned rasters live in a temporary folder: no memo file
        self.sources = HashMemo(self.root / "hashes.json")   # input files (shared with pipeline.reprocess)
        self._keys: dict[str, str] = {}
        self._blocks: BlockMemo | None = None
        self.used: set[str] = set()    # "<step>/<key>" of the entries this run read or wrote
        self._clean_debris()

    # -- generic entries ---------------------------------------------------------
    def entry(self, step: str, key: str) -> Path:
        return self.root / step / key

    def get(self, step: str, key: str) -> Path | None:
        e = self.entry(step, key)
        if (e / "meta.json").is_file():
            self.used.add(f"{step}/{key}")
            self.stats.hits.append(f"{step}/{key[:12]}")
            log.info("cache hit: %s %s", step, key[:12])
            return e
        self.stats.misses.append(f"{step}/{key[:12]}")
        log.info("cache miss: %s %s", step, key[:12])
        return None

    def meta(self, step: str, key: str) -> dict:
        return json.loads((self.entry(step, key) / "meta.json").read_text(encoding="utf-8"))

    def put(self, step: str, key: str, files: dict[str, Path], meta: dict) -> Path:
        """Store `files` ({name in entry: source path}) and `meta` under `key`, atomically."""
        final = self.entry(step, key)
        self.used.add(f"{step}/{key}")
        if final.exists():
            return final
        tmp = final.parent / f".{key}.tmp-{os.getpid()}"
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            for name, src in files.items():
                _link_or_copy(Path(src), tmp / name)
            (tmp / "meta.json").write_text(json.dumps(dict(meta, key=key, step=step), indent=1,
                                                      sort_keys=True, default=str), encoding="utf-8")
            durable.sync_tree(tmp)        # the entry's files on the disk before its name appears
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another run stored the same entry
            durable.fsync_path(final.parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(f"cannot write the cache entry {step}/{key[:12]} ({exc})", path=final,
                              fix="check free disk space, or delete the cache folder (it is "
                                  "rebuilt as needed)") from None
        return final

    def restore(self, step: str, key: str, dest: Path) -> dict[str, Path]:
        """Link the files of an entry into `dest`; return {name: path in dest}."""
        e = self.entry(step, key)
        dest.mkdir(parents=True, exist_ok=True)
        out = {}
        for p in sorted(e.iterdir()):
            if p.name == "meta.json" or not p.is_file():
                continue
            _link_or_copy(p, dest / p.name)
            out[p.name] = dest / p.name
        return out

    def restore_styled(self, step: str, key: str, dest: Path) -> dict[str, Path]:
        """:meth:`restore`, but the entry's style sidecars (``.qml``) are dropped when the
        styling code changed since they were written (publishing then writes new ones)."""
        out = self.restore(step, key, dest)
        if self.meta(step, key).get("style_code") != style_code():
            for name in [n for n in out if n.endswith(".qml")]:
                out.pop(name).unlink()
        return out

    def _clean_debris(self) -> None:
        if not self.root.is_dir():
            return
        from pipeline.io.outputs import _alive

        for p in self.root.glob("*/.*.tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)

    # -- keys ------------------------------------------------------------------
    def base_key(self, ing, params: dict, chunk: int) -> dict:
        cfg = ing.cfg
        return {"code": code_version(steps_only=True), "rulebook": self.hashes(cfg.rulebook),
                "params": {k: float(v) for k, v in sorted(params.items())},
                "grid": ing.grid.describe(), "chunk": int(chunk)}

    def hydrology_key(self, ing, aligned: dict, params: dict, chunk: int, vintage: str | None = None) -> str:
        dem = aligned["dem"] if vintage is None else aligned[f"dem_{vintage}"]
        return digest({"step": "hydrology", "base": self.base_key(ing, params, chunk),
                       "dem": self.hashes(dem),
                       "boundary": frame_digest(ing.basin),
                       "outlets": [list(map(repr, o)) for o in ing.outlets_xy],
                       "streams": frame_digest(ing.layers.get("streams"))})

    def landscape_key(self, hyd_key: str, v, aligned: dict) -> str:
        return digest({"step": "landscape", "hydrology": hyd_key, "scheme": v.scheme,
                       "landcover": self.hashes(aligned[f"lc_{v.name}"])})

    def sites_key(self, land_key: str, v, ing) -> str:
        return digest({"step": "sites", "landscape": land_key, "name": v.name, "year": v.year,
                       "sites": frame_digest(ing.sites),
                       "layers": {k: frame_digest(g) for k, g in sorted(ing.layers.items())}})

    # -- the cached steps of pipeline.run ----------------------------------------------
    def aligned(self, src: Path, grid, dst: Path, options: dict, compute: Callable) -> Path:
        """`compute(src, grid, dst, **options)` (pipeline.io.rasters.align_raster) or the
        raster it wrote before for the same source bytes, grid and options, linked to `dst`."""
        key = digest({"step": "aligned", "code": code_version(steps_only=True), "source": self.sources(src),
                      "grid": grid.describe(), "options": {k: repr(v) for k, v in sorted(options.items())}})
        if self.get("aligned", key) is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(self.entry("aligned", key) / "aligned.tif", dst)
            self.hashes.seed(dst, self.meta("aligned", key)["sha256"])   # the step keys need it
            return dst
        compute(src, grid, dst, **options)
        self.put("aligned", key, {"aligned.tif": dst}, {"sha256": self.hashes(dst), "source": str(src)})
        return dst

    def hydrology(self, ing, aligned: dict, layout, params: dict, chunk: int, notes: list[str],
                  compute: Callable, vintage: str | None = None):
        """`compute(ing, aligned, layout, params, chunk, notes, vintage=vintage)` or its cached
        result; with `vintage`, the hydrology of that vintage's as-built DEM
        (pipeline.run.run_hydrology)."""
        import rasterio

        from pipeline.run import Hydrology

        key = self.hydrology_key(ing, aligned, params, chunk, vintage)
        if vintage is None:
            self._keys = {"hydrology": key}
        else:
            self._keys[f"hydrology/{vintage}"] = key
        folder = layout.hydrology_of(vintage)
        if self.get("hydrology", key) is not None:
            meta = self.meta("hydrology", key)
            self.restore_styled("hydrology", key, folder)
            paths = {k: folder / name for k, name in meta["paths"].items()}
            notes.extend(meta["notes"])
            with rasterio.open(paths["basin_mask"]) as src:
                mask = src.read(1).astype(bool)
            return Hydrology(paths=paths, basin_mask=mask)
        mine: list[str] = []
        hyd = compute(ing, aligned, layout, params, chunk, mine, vintage=vintage)
        notes.extend(mine)
        # the published hydrology rasters are COGs (pipeline.deliver converts them); converting
        # before storing means a run that restores this entry has nothing left to convert
        from pipeline.report.cog import convert_to_cog

        for p in sorted({Path(p) for p in hyd.paths.values()}):
            if p.suffix.lower() in (".tif", ".tiff"):
                convert_to_cog(p)
        rel = {k: _inside(p, folder) for k, p in hyd.paths.items()}
        self.put("hydrology", key, _with_styles(hyd.paths, folder, rel),
                 {"paths": rel, "notes": mine, "style_code": style_code()})
        return hyd

    def landscape(self, ing, v, aligned: dict, hyd, layout, params: dict, chunk: int,
                  compute: Callable) -> tuple[Path, dict]:
        """`compute(ing, v, aligned, hyd, layout, params, chunk)` or its cached result."""
        key = self.landscape_key(self._keys.get(f"hydrology/{v.name}", self._keys["hydrology"]), v, aligned)
        self._keys[f"landscape/{v.name}"] = key
        dest = layout.indicators(v.name)
        if self.get("landscape", key) is not None:
            meta = self.meta("landscape", key)
            self.restore_styled("landscape", key, dest)
            paths = {k: dest / name for k, name in meta["paths"].items()}
            return paths["canonical"], paths
        canon, paths = compute(ing, v, aligned, hyd, layout, params, chunk, memo=self.block_memo())
        rel = {k: _inside(p, dest) for k, p in paths.items()}
        self.put("landscape", key, _with_styles(paths, dest, rel), {"paths": rel, "style_code": style_code()})
        return canon, paths

    def site_indicators(self, ing, hyd, landscape: dict, params: dict, compute: Callable) -> pd.DataFrame:
        """Site indicator rows, vintage by vintage: cached vintages are read, others computed.

        `compute(ing, hyd, landscape, params)` is called with `ing.cfg.landcover` cut
        down to one vintage; the rows of a vintage do not depend on the others.
        """
        parts = []
        for v in ing.cfg.landcover:
            key = self.sites_key(self._keys[f"landscape/{v.name}"], v, ing)
            if self.get("sites", key) is not None:
                with open(self.entry("sites", key) / "rows.pkl", "rb") as f:
                    parts.append(pickle.load(f))
                continue
            one = replace(ing, cfg=ing.cfg.model_copy(update={"landcover": [v]}))
            df = compute(one, hyd, {v.name: landscape[v.name]}, params)
            tmp = self.root / f".rows-{os.getpid()}.pkl"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                pickle.dump(df, f, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self.put("sites", key, {"rows.pkl": tmp}, {"vintage": v.name, "year": v.year})
            finally:
                tmp.unlink(missing_ok=True)
            parts.append(df)
        return pd.concat(parts, ignore_index=True)

    def credit_raster(self, inputs: dict, path: Path, write: Callable[[], None]) -> bool:
        """The credit raster of one project (pipeline.scoring.spread.write_credit_rasters):
        link the one written before for the same `inputs` to `path` and return True, or
        call `write()` (which writes `path`), keep it and return False. Not logged one by
        one (a basin has hundreds of projects); the caller logs the counts."""
        from pipeline.report.cog import raster_style_qml
        from pipeline.report.model import write_text

        # all the code: the writer (scoring/spread.py) and the style (report/) are outside the step code
        key = digest({"step": "credit_raster", "code": code_version(), "inputs": inputs})
        e = self.entry("credit_raster", key)
        if (e / "meta.json").is_file():
            self.used.add(f"credit_raster/{key}")
            path.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(e / "raster.tif", path)
            if (e / "raster.qml").is_file():
                _link_or_copy(e / "raster.qml", path.with_suffix(".qml"))
            return True
        write()
        files = {"raster.tif": path}
        qml = raster_style_qml(path.stem, path)     # as deliver would write it (it keeps this one)
        if qml is not None:
            files["raster.qml"] = write_text(path.with_suffix(".qml"), qml)
        self.put("credit_raster", key, files, {"name": path.name})
        return False

    def block_memo(self) -> "BlockMemo":
        """The memo of per-chunk block results beside the step entries (one per cache)."""
        if self._blocks is None:
            self._blocks = BlockMemo(self.root / "blocks")
        return self._blocks

    def close(self) -> None:
        """After a run that finished its steps: save the input hash memo, remove the step
        entries no recent run used (:meth:`prune_unused`) and trim the block memo to its
        size budget (least recently used blocks go first)."""
        self.sources.save()
        self.prune_unused()
        if self._blocks is not None:
            log.info("block memo: %d chunk result(s) reused, %d computed", self._blocks.hits,
                     self._blocks.misses)
            self._blocks.prune()

    def prune_unused(self, keep_runs: int = KEEP_RUNS) -> int:
        """Record the entries this run used in ``runs.json`` and remove every step entry
        that none of the last `keep_runs` runs used; return how many were removed.

        Every run restores every vintage's entries, so what goes is what no run will
        ask for again: entries of replaced inputs, of removed vintages and of an
        earlier version of the code (a new version keys everything anew, and the old
        entries would otherwise keep a second copy of the outputs on disk).
        """
        path = self.root / "runs.json"
        try:
            runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
        except (OSError, ValueError, KeyError, TypeError):
            runs = []
        runs = (runs + [{"time": _now(), "used": sorted(self.used)}])[-keep_runs:]
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".runs.{os.getpid()}.json")
        durable.write_text(path, json.dumps({"runs": runs}, indent=1), tmp=tmp)
        keep = {u for r in runs for u in r["used"]}
        n = 0
        freed = 0
        for step in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name in STEPS):
            for e in step.iterdir():
                if e.name.startswith(".") or f"{step.name}/{e.name}" in keep:
                    continue
                freed += sum(f.stat().st_size for f in e.iterdir() if f.is_file() and f.stat().st_nlink == 1)
                shutil.rmtree(e, ignore_errors=True)
                n += 1
        if n:
            log.info("cache: removed %d entr%s that none of the last %d runs used (%.0f MB freed)",
                     n, "y" if n == 1 else "ies", len(runs), freed / 1e6)
        return n


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _with_styles(paths: dict[str, Path], folder: Path, rel: dict[str, str]) -> dict[str, Path]:
    """The files of a step entry: its outputs and the QGIS sidecar of each raster
    (pipeline.report.cog.write_raster_styles, written beside it now, as publishing would),
    so that a run restoring the entry does not read the rasters again to style them."""
    from pipeline.report.cog import write_raster_styles

    rasters = {k: Path(p) for k, p in paths.items() if Path(p).suffix.lower() in (".tif", ".tiff")}
    styles = write_raster_styles(rasters)
    return {name: folder / name for name in set(rel.values()) | {_inside(q, folder) for q in styles}}


def _inside(p: Path, folder: Path) -> str:
    p = Path(p)
    if p.parent.resolve() != Path(folder).resolve():
        raise AssertionError(f"{p} is not directly inside {folder}; it cannot be cached")
    return p.name


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---------------------------------------------------------------------------------
# per-chunk memo of block functions


class BlockMemo:
    """Results of pure block functions (numpy in, numpy out), stored by the content of their input.

    ``memo(name, fn, blocks, params)`` returns ``fn(*blocks)``: read from
    ``<root>/<k[:2]>/<k>.npy`` (or ``.npz`` for a dict result) when an earlier run
    stored it, else computed and stored (temporary file + rename, so a killed run
    never leaves a half-written block under its key). ``k`` is the sha256 of `name`,
    the canonical JSON of `params`, :func:`code_version` and, for every input block,
    its dtype, shape and bytes. A result is a numpy array, or a dict of numpy arrays
    and Python ints/floats (restored as such). Safe to call from several threads.
    A hit touches the file, so :meth:`prune` drops the least recently used blocks.
    """

    def __init__(self, root: Path, max_bytes: float = 4e9):
        self.root = Path(root)
        self.max_bytes = float(max_bytes)
        self.hits = 0
        self.misses = 0

    def key(self, name: str, blocks, params) -> str:
        h = hashlib.sha256(f"{name}\0{digest(params)}\0{code_version(steps_only=True)}".encode())
        for b in blocks:
            a = np.ascontiguousarray(b)
            h.update(f"\0{a.dtype.str}{a.shape}\0".encode())
            h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
        return h.hexdigest()

    def __call__(self, name: str, fn: Callable, blocks, params=()):
        blocks = tuple(np.asarray(b) for b in blocks)
        k = self.key(name, blocks, params)
        folder = self.root / k[:2]
        for suffix in (".npy", ".npz"):
            p = folder / f"{k}{suffix}"
            try:
                got = _load_block(p)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError):   # damaged entry: recompute and replace it
                log.warning("block memo entry %s is unreadable; recomputing it", p.name)
                break
            try:
                os.utime(p)
            except OSError:
                pass
            self.hits += 1
            return got
        out = fn(*blocks)
        self.misses += 1
        try:
            _save_block(folder, k, out)
        except OSError as exc:   # the memo is an optimisation: a full disk must not fail the run
            log.warning("cannot store block %s in the memo (%s)", k[:12], exc)
        return out

    def prune(self) -> int:
        """Delete least recently used blocks until the memo holds at most ``max_bytes``; return the count."""
        if not self.root.is_dir():
            return 0
        files = []
        for p in self.root.glob("*/*.np[yz]"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total = sum(f[1] for f in files)
        n = 0
        for _, size, p in sorted(files, key=lambda f: (f[0], f[2].name)):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            n += 1
        if n:
            log.info("block memo: removed %d least recently used block(s)", n)
        return n


def _save_block(folder: Path, k: str, out) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    import threading

    tag = f"{os.getpid()}-{threading.get_ident()}"
    if isinstance(out, np.ndarray):
        final = folder / f"{k}.npy"
        tmp = folder / f".{k}.{tag}.tmp.npy"
        np.save(tmp, out, allow_pickle=False)
    elif isinstance(out, dict):
        final = folder / f"{k}.npz"
        tmp = folder / f".{k}.{tag}.tmp.npz"
        arrays = {}
        for name, v in out.items():
            if isinstance(v, np.ndarray):
                arrays[f"a_{name}"] = v
            elif isinstance(v, (bool, int, float, np.integer, np.floating)):
                arrays[f"s_{name}"] = np.asarray(v)
            else:
                raise TypeError(f"block result field {name!r} is a {type(v).__name__}; "
                                "only numpy arrays and numbers can be memoised")
        np.savez(tmp, allow_pickle=False, **arrays)
    else:
        raise TypeError(f"block result is a {type(out).__name__}; only numpy arrays and dicts "
                        "of them can be memoised")
    try:
        # flushed first: a block whose name survived a power cut without its data (zeros on
        # some file systems) would be served as a result
        durable.fsync_path(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _load_block(p: Path):
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    with np.load(p, allow_pickle=False) as z:
        out = {}
        for name in z.files:
            kind, field_name = name.split("_", 1)
            v = z[name]
            out[field_name] = v if kind == "a" else v.item()
        return out
