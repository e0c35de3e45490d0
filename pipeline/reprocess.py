"""Scheduled, unattended reprocessing when new land cover arrives (`python -m pipeline reprocess`).

One pass (`--once` is the only mode; a timer or cron runs it):

1. take the basin lock (``<store>/reprocess.lock``: pid, hostname, start time; a lock
   whose process is dead - or whose pid now belongs to a younger process - is stale
   and taken over);
2. look in the inbox for new land-cover rasters; each declares its year and scheme
   by its name ``landcover_<year>[_<scheme>].tif`` (scheme defaults to the newest
   vintage's) or by a sidecar ``<file>.yaml`` / ``<stem>.yaml`` with ``year``,
   ``scheme``, ``name`` (default name ``y<year>``); ``dem_<year>.tif`` (or a sidecar with
   ``kind: dem``) is the as-built DEM of the vintage of that year (land cover is taken
   first, so both may arrive in one pass);
3. validate each with the ingestion checks (readable, integer classes, nodata, CRS
   and overlap with the basin grid, every code a class of the scheme) plus the
   vintage rules (year after the baseline, year and name not already used);
   a valid file is copied into the data store (``<store>/landcover/<name>.tif``,
   ``<store>/dem/<name>.tif``), registered in ``<store>/vintages.yaml`` and removed from
   the inbox; an invalid one is moved to ``<inbox>/quarantine/`` with
   ``<file>.error.txt`` and ``.error.json``;
4. merge the registry with the configuration's ``landcover:`` list (the baseline stays
   the configuration's; the newest vintage is assessed unless ``assessment:`` names one),
   write it as ``<store>/assessment.yaml``;
5. if the run key (content hashes of every input, the resolved configuration and the
   code) equals that of the last published run, stop: nothing is computed;
6. otherwise run the assessment with the step cache (``pipeline.cache``): hydrology,
   the indicators of every unchanged vintage and their site indicators are reused;
   outputs are staged and published in one rename (``pipeline.io.outputs.Publisher``).

Exit codes: 0 nothing new or done; 1 error (including: another run holds the lock);
2 at least one inbox file was quarantined (the valid ones were still processed);
3 internal error (a bug; see pipeline.cli).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import Config, LandcoverVintage, load_config, parse_yaml
from pipeline.errors import ConfigError, InputDataError, OutputError, PipelineError
from pipeline.io import durable
from pipeline.io.scans import copied, scan_memo

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_QUARANTINED = 2

SETTLE_S = 5.0
"""A file modified less than this many seconds ago may still be arriving; it waits for the next run."""

NAME_RE = re.compile(r"^landcover_(?P<year>\d{4})(?:_(?P<scheme>[A-Za-z0-9_]+))?\.tiff?$", re.IGNORECASE)
DEM_RE = re.compile(r"^dem_(?P<year>\d{4})\.tiff?$", re.IGNORECASE)
RASTER_SUFFIXES = (".tif", ".tiff")
IGNORED_SUFFIXES = (".yaml", ".yml", ".part", ".tmp", ".crdownload", ".aux.xml", ".ovr", ".txt",
                    ".json", ".md")
SIDECAR_KEYS = {"year", "scheme", "name", "kind"}
KINDS = ("landcover", "dem")


# ---------------------------------------------------------------------------------
# the lock


class LockHeld(PipelineError):
    """Another reprocess run of the same basin holds the lock."""


class BasinLock:
    """One run at a time per basin: an exclusive lock file holding pid, hostname and start time.

    Taking the lock over from a dead holder is serialised by ``flock`` on a guard
    file, so two runs that both find a stale lock cannot both take it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.info = {"pid": os.getpid(), "hostname": socket.gethostname(),
                     "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "started_epoch": time.time()}
        self.held = False

    def __enter__(self) -> "BasinLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        guard = os.open(self.path.with_name(self.path.name + ".guard"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            held = self.holder()
            if held is not None:
                why = stale_reason(held)
                if why is None:
                    raise LockHeld(
                        f"another reprocess run of this basin is going on (pid {held.get('pid')} on "
                        f"{held.get('hostname')}, started {held.get('started')})", path=self.path,
                        fix="wait for it to finish; if no such run exists (e.g. the machine "
                            f"{held.get('hostname')} was reinstalled), delete the lock file")
                log.warning("taking over a stale lock %s: %s", self.path, why)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(self.info), encoding="utf-8")
            os.replace(tmp, self.path)
            self.held = True
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
            os.close(guard)

    def release(self) -> None:
        if not self.held:
            return
        held = self.holder()
        if held and held.get("pid") == self.info["pid"] and held.get("hostname") == self.info["hostname"]:
            self.path.unlink(missing_ok=True)
        self.held = False


def stale_reason(held: dict) -> str | None:
    """Why a lock is stale, or None when its holder may still be running."""
    if not held or "pid" not in held:
        return "the lock file is unreadable or empty (a run died while writing it)"
    if held.get("hostname") != socket.gethostname():
        return None  # cannot see processes on another host: never broken automatically
    pid = int(held["pid"])
    import psutil

    try:
        proc = psutil.Process(pid)
        created = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited"
    except psutil.NoSuchProcess:
        return f"process {pid} is no longer running"
    except psutil.AccessDenied:
        return None
    started = float(held.get("started_epoch", 0) or 0)
    if started and created > started + 1.0:
        return f"pid {pid} now belongs to a process started after the lock was taken"
    return None


# ---------------------------------------------------------------------------------
# the inbox


@dataclass(frozen=True)
class Candidate:
    path: Path
    sidecar: Path | None


@dataclass(frozen=True)
class Declared:
    name: str
    year: int
    scheme: str
    kind: str = "landcover"     # or "dem": the as-built DEM of the vintage of `year`


def scan_inbox(inbox: Path, settle_s: float = SETTLE_S, now: float | None = None) -> list[Candidate]:
    """Files in the inbox to consider, oldest name first; hidden, partial and sidecar files skipped."""
    now = time.time() if now is None else now
    out = []
    for p in sorted(inbox.iterdir()):
        if not p.is_file() or p.name.startswith((".", "~")):
            continue
        low = p.name.lower()
        if low.endswith(IGNORED_SUFFIXES):
            continue
        if now - p.stat().st_mtime < settle_s:
            log.info("inbox: %s was modified %.0f s ago; left for the next run", p.name,
                     now - p.stat().st_mtime)
            continue
        out.append(Candidate(p, _sidecar(p)))
    return out


def _sidecar(p: Path) -> Path | None:
    for cand in (p.with_name(p.name + ".yaml"), p.with_name(p.name + ".yml"), p.with_suffix(".yaml"),
                 p.with_suffix(".yml")):
        if cand.is_file():
            return cand
    return None


def _sidecar_data(c: Candidate) -> dict:
    """The sidecar's mapping ({} without one); raise InputDataError when it is unusable."""
    if c.sidecar is None:
        return {}
    try:
        data = parse_yaml(c.sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputDataError(f"cannot read the sidecar file ({exc})", path=c.sidecar,
                             fix="write it as YAML: year: 2024, scheme: clcd, name: y2024") from None
    if not isinstance(data, dict):
        raise InputDataError("the sidecar file must be a YAML mapping", path=c.sidecar,
                             fix="write it as YAML: year: 2024, scheme: clcd, name: y2024")
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise InputDataError(f"unknown key(s) {unknown} in the sidecar file", path=c.sidecar,
                             fix=f"allowed keys: {', '.join(sorted(SIDECAR_KEYS))}")
    if data.get("kind", "landcover") not in KINDS:
        raise InputDataError(f"kind {data['kind']!r} is not one of {', '.join(KINDS)}", path=c.sidecar,
                             field="kind", fix="kind: landcover (the default) or kind: dem (an as-built DEM)")
    return data


def _declare_dem(c: Candidate, info: dict) -> Declared:
    if "scheme" in info:
        raise InputDataError("a DEM has no land-cover scheme", path=c.sidecar, field="scheme",
                             fix="remove 'scheme:' from the DEM's sidecar")
    m = DEM_RE.match(c.path.name)
    if "year" not in info:
        if m is None:
            raise InputDataError(
                "the file name does not say the year of the as-built DEM", path=c.path,
                fix="name it dem_<year>.tif (e.g. dem_2024.tif) or put a sidecar "
                    f"{c.path.name}.yaml beside it with 'kind: dem' and 'year:'")
        info["year"] = int(m.group("year"))
    try:
        year = int(info["year"])
    except (TypeError, ValueError):
        raise InputDataError(f"year {info['year']!r} is not a whole number", path=c.sidecar or c.path,
                             field="year", fix="give a four-digit year, e.g. year: 2024") from None
    return Declared(name=str(info.get("name") or f"y{year}"), year=year, scheme="", kind="dem")


def _kind(c: Candidate, sidecar: dict) -> str:
    return sidecar.get("kind") or ("dem" if DEM_RE.match(c.path.name) else "landcover")


def kind_of(c: Candidate) -> str:
    """'dem' or 'landcover' (what `declare` will say; a sidecar it cannot read: 'landcover')."""
    try:
        return _kind(c, _sidecar_data(c))
    except InputDataError:
        return "landcover"


def declare(c: Candidate, default_scheme: str) -> Declared:
    """Year, scheme and vintage name of an inbox file (sidecar first, then the file name).

    ``dem_<year>.tif`` (or a sidecar with ``kind: dem``) is the as-built DEM of the vintage
    of that year; its ``name`` is that vintage's (default ``y<year>``)."""
    info: dict = dict(_sidecar_data(c))
    if _kind(c, info) == "dem":
        return _declare_dem(c, info)
    m = NAME_RE.match(c.path.name)
    if "year" not in info:
        if m is None:
            if not c.path.name.lower().endswith(RASTER_SUFFIXES):
                raise InputDataError(
                    "not a GeoTIFF (reprocess takes land-cover rasters and as-built DEMs)",
                    path=c.path, fix="deliver land cover as landcover_<year>[_<scheme>].tif and an "
                                     "as-built DEM as dem_<year>.tif; other inputs are changed in the "
                                     "basin configuration")
            raise InputDataError(
                "the file name does not say the year of the land cover", path=c.path,
                fix="name it landcover_<year>[_<scheme>].tif (e.g. landcover_2024_clcd.tif) or "
                    f"put a sidecar {c.path.name}.yaml beside it with 'year:' and 'scheme:'")
        info["year"] = int(m.group("year"))
    if "scheme" not in info:
        info["scheme"] = (m.group("scheme") if m is not None and m.group("scheme") else default_scheme)
    try:
        year = int(info["year"])
    except (TypeError, ValueError):
        raise InputDataError(f"year {info['year']!r} is not a whole number", path=c.sidecar or c.path,
                             field="year", fix="give a four-digit year, e.g. year: 2024") from None
    name = str(info.get("name") or f"y{year}")
    return Declared(name=name, year=year, scheme=str(info["scheme"]))


def check_candidate(c: Candidate, d: Declared, cfg: Config, grid) -> LandcoverVintage:
    """The inbox file as a vintage of `cfg`, checked; raise InputDataError on any problem."""
    from pydantic import ValidationError

    from pipeline.io.ingest import _check_landcover

    try:
        v = LandcoverVintage(name=d.name, year=d.year, path=c.path, scheme=d.scheme)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
        raise InputDataError(f"invalid vintage declaration: {msgs}", path=c.sidecar or c.path,
                             fix="fix the file name (landcover_<year>[_<scheme>].tif) or the sidecar "
                                 "yaml") from None
    base = cfg.vintage(cfg.baseline_name)
    if v.year <= base.year:
        raise InputDataError(
            f"year {v.year} is not after the baseline year {base.year}; history and credits are "
            "measured from the baseline", path=c.path, field="year",
            fix="check the year in the file name or sidecar")
    for old in cfg.landcover:
        if old.year == v.year:
            raise InputDataError(
                f"a vintage of {v.year} is already registered ({old.name}: {old.path})", path=c.path,
                field="year", fix="to replace it, change the basin configuration (or remove it from "
                                  "<store>/vintages.yaml) and drop the file again")
        if old.name == v.name:
            raise InputDataError(f"the vintage name {v.name!r} is already used ({old.year})",
                                 path=c.path, field="name", fix="give another name in a sidecar yaml")
    _check_landcover(v, grid)
    return v


def check_dem_candidate(c: Candidate, d: Declared, cfg: Config, items: list[dict], store: "StorePaths",
                        grid) -> dict:
    """The registry entry of the vintage the as-built DEM `c` belongs to, the DEM checked like
    the configuration's (pipeline.io.ingest); raise InputDataError on any problem."""
    from pipeline.io.ingest import _check_asbuilt_dem

    target = next((v for v in cfg.landcover if v.year == d.year), None)
    if target is None:
        raise InputDataError(
            f"no land-cover vintage of {d.year} is registered for this as-built DEM", path=c.path,
            field="year", fix=f"deliver the land cover of {d.year} (landcover_{d.year}.tif) in the same "
                              "pass or before it, then drop the DEM again")
    if d.name not in (f"y{d.year}", target.name):
        raise InputDataError(f"the vintage of {d.year} is {target.name!r}, not {d.name!r}",
                             path=c.sidecar or c.path, field="name",
                             fix=f"write name: {target.name} in the sidecar, or leave 'name:' out")
    item = next((i for i in items if i["name"] == target.name
                 and Path(store.root / i["path"]) == Path(target.path)), None)
    if item is None:
        raise InputDataError(
            f"the vintage {target.name} ({d.year}) is defined in the basin configuration, not by "
            "reprocess", path=c.path, field="dem",
            fix=f"set 'dem: <file>' on {target.name} in the configuration ({cfg.source})")
    if item.get("dem"):
        raise InputDataError(
            f"the vintage {target.name} already has an as-built DEM ({item['dem']})", path=c.path,
            field="dem", fix="to replace it, delete its dem* entries from <store>/vintages.yaml and "
                             "drop the file again")
    _check_asbuilt_dem(target.model_copy(update={"dem": c.path}), grid, [])
    return item


def quarantine(c: Candidate, exc: PipelineError, inbox: Path) -> Path:
    """Move an inbox file (and its sidecar) to <inbox>/quarantine with an error report beside it."""
    qdir = inbox / "quarantine"
    qdir.mkdir(exist_ok=True)
    dst = qdir / c.path.name
    n = 1
    while dst.exists() or dst.with_name(dst.name + ".error.txt").exists():
        dst = qdir / f"{c.path.stem}-{n}{c.path.suffix}"
        n += 1
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    text = (f"{c.path.name} was quarantined by `python -m pipeline reprocess` at {now}\n\n"
            f"{type(exc).__name__}: {exc.render()}\n\n"
            "Fix the file and drop it into the inbox again (delete it from the quarantine "
            "folder once handled).\n")
    report = {"file": c.path.name, "quarantined": now, "error": type(exc).__name__,
              "message": exc.message, "field": exc.field, "fix": exc.fix,
              "sidecar": c.sidecar.name if c.sidecar else None}
    _write_atomic(dst.with_name(dst.name + ".error.txt"), text)
    _write_atomic(dst.with_name(dst.name + ".error.json"),
                  json.dumps(report, ensure_ascii=False, indent=2))
    shutil.move(str(c.path), str(dst))
    if c.sidecar is not None and c.sidecar.exists():
        shutil.move(str(c.sidecar), str(qdir / f"{dst.name}.yaml"))
    log.error("quarantined %s -> %s: %s", c.path.name, dst, exc.message)
    return dst


# ---------------------------------------------------------------------------------
# the data store


@dataclass(frozen=True)
class StorePaths:
    root: Path

    @property
    def registry(self) -> Path:
        return self.root / "vintages.yaml"

    @property
    def landcover(self) -> Path:
        return self.root / "landcover"

    @property
    def dem(self) -> Path:
        return self.root / "dem"

    @property
    def lock(self) -> Path:
        return self.root / "reprocess.lock"

    @property
    def log(self) -> Path:
        return self.root / "reprocess.log"

    @property
    def effective_config(self) -> Path:
        return self.root / "assessment.yaml"


def store_of(cfg: Config) -> StorePaths:
    if cfg.store is not None:
        return StorePaths(Path(cfg.store))
    # one store per basin, even when several basins keep their inboxes in one folder
    return StorePaths(Path(cfg.inbox).parent / f"{cfg.basin.name}-store")


def load_registry(store: StorePaths) -> list[dict]:
    """Vintages registered by reprocess: name, year, scheme, path (relative to the store), sha256, ..."""
    if not store.registry.is_file():
        return []
    try:
        data = parse_yaml(store.registry.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputDataError(f"the vintage registry cannot be read ({exc})", path=store.registry,
                             fix="repair the YAML (it lists the vintages reprocess added)") from None
    items = data.get("vintages", []) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InputDataError("the vintage registry must hold 'vintages:' as a list of mappings",
                             path=store.registry, fix="repair the YAML")
    return items


def save_registry(store: StorePaths, items: list[dict]) -> None:
    text = ("# Land-cover vintages added by `python -m pipeline reprocess` (merged with the "
            "configuration's landcover: list).\n"
            + yaml.safe_dump({"vintages": items}, allow_unicode=True, sort_keys=False))
    _write_atomic(store.registry, text)


def register(c: Candidate, v: LandcoverVintage, digest: str, store: StorePaths,
             items: list[dict]) -> dict:
    """Copy the file into the store, then record it (the registry write is the commit point)."""
    dst = _copy_into_store(c, store.landcover / f"{v.name}{c.path.suffix.lower()}")
    entry = {"name": v.name, "year": v.year, "scheme": v.scheme,
             "path": str(dst.relative_to(store.root)), "sha256": digest, "source": c.path.name,
             "registered": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    items.append(entry)
    items.sort(key=lambda i: int(i["year"]))
    save_registry(store, items)
    _remove_from_inbox(c)
    log.info("registered vintage %s (%d, %s) from %s", v.name, v.year, v.scheme, c.path.name)
    return entry


def register_dem(c: Candidate, item: dict, digest: str, store: StorePaths, items: list[dict]) -> dict:
    """Copy the as-built DEM into the store and record it on its vintage's registry entry."""
    dst = _copy_into_store(c, store.dem / f"{item['name']}{c.path.suffix.lower()}")
    item.update({"dem": str(dst.relative_to(store.root)), "dem_sha256": digest, "dem_source": c.path.name,
                 "dem_registered": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    save_registry(store, items)
    _remove_from_inbox(c)
    log.info("registered the as-built DEM of %s (%s) from %s", item["name"], item["year"], c.path.name)
    return item


def _copy_into_store(c: Candidate, dst: Path) -> Path:
    """Copy the inbox file to `dst` (temporary name + rename: never half-written)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        shutil.copy2(c.path, tmp)
        durable.replace(tmp, dst)    # on the disk before the inbox copy is removed
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot copy into the data store ({exc})", path=dst,
                          fix="check free disk space and permissions of the store folder") from None
    copied(c.path, dst)
    return dst


def _remove_from_inbox(c: Candidate) -> None:
    c.path.unlink(missing_ok=True)
    if c.sidecar is not None:
        c.sidecar.unlink(missing_ok=True)


def effective_config(cfg: Config, items: list[dict], store: StorePaths) -> Config:
    """The configuration with the registered vintages merged in (validated again)."""
    names = {v.name for v in cfg.landcover}
    years = {v.year for v in cfg.landcover}
    merged = list(cfg.landcover)
    for i in items:
        if i["name"] in names or int(i["year"]) in years:
            log.warning("registered vintage %s (%s) is shadowed by the configuration's landcover list",
                        i["name"], i["year"])
            continue
        merged.append(LandcoverVintage(name=i["name"], year=int(i["year"]), scheme=i["scheme"],
                                       path=store.root / i["path"],
                                       dem=store.root / i["dem"] if i.get("dem") else None))
    merged.sort(key=lambda v: v.year)
    data = cfg.model_dump()
    data.update(landcover=[v.model_dump() for v in merged], baseline=cfg.baseline_name,
                assessment=cfg.assessment or merged[-1].name)
    try:
        return Config.model_validate(data).model_copy(update={"source": cfg.source})
    except Exception as exc:  # pydantic.ValidationError: report it as a configuration problem
        raise ConfigError(f"the configuration merged with the registry is invalid: {exc}",
                          path=store.registry, fix="check vintages.yaml against the configuration") from None


def write_effective_config(cfg: Config, path: Path) -> Path:
    data = json.loads(cfg.model_dump_json(exclude_none=True))
    text = ("# Written by `python -m pipeline reprocess`: the basin configuration "
            f"({cfg.source}) with the registered vintages merged in. Do not edit.\n"
            + yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    _write_atomic(path, text)
    return path


# ---------------------------------------------------------------------------------
# run key and published state


def run_key(cfg: Config, hashes) -> dict[str, str]:
    """What the outputs depend on: input contents (not paths), resolved configuration, code.

    Returns the digest of each part and ``key``, the digest of all three.
    """
    from pipeline.cache import code_version, digest

    data = json.loads(cfg.model_dump_json())
    for k in ("inbox", "store"):
        data.pop(k, None)
    parts = {"config": digest(_drop_paths(data)),
             "inputs": digest({role: hashes(path) for role, path in cfg.input_files()}),
             "code": code_version()}
    return dict(parts, key=digest(parts))


def _drop_paths(node):
    if isinstance(node, dict):
        return {k: _drop_paths(v) for k, v in node.items()
                if not (k in ("path", "dem", "rulebook") and (isinstance(v, str) or v is None))}
    if isinstance(node, list):
        return [_drop_paths(v) for v in node]
    return node


def _state_path(out_dir: Path, basin: str) -> Path:
    return out_dir.resolve().parent / ".cache" / basin / "published.json"


def up_to_date(out_dir: Path, basin: str, key: dict[str, str]) -> bool:
    """True when the published outputs were made from exactly these inputs, configuration and code."""
    from pipeline.runlog import sha256

    try:
        state = json.loads(_state_path(out_dir, basin).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.info("no record of a published reprocess run: assessing")
        return False
    manifest = out_dir / "manifest.json"
    if not manifest.is_file() or state.get("manifest_sha256") != sha256(manifest):
        log.info("the published outputs are not those of the last reprocess run: assessing")
        return False
    changed = [k for k in ("config", "inputs", "code") if state.get("run_key", {}).get(k) != key[k]]
    if changed:
        log.info("changed since the last published run: %s", ", ".join(changed))
    return not changed


def _record_published(out_dir: Path, basin: str, key: dict[str, str]) -> None:
    from pipeline.runlog import sha256

    path = _state_path(out_dir, basin)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps({
        "run_key": key, "out": str(out_dir.resolve()),
        "manifest_sha256": sha256(out_dir / "manifest.json"),
        "published": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}, indent=1))


# ---------------------------------------------------------------------------------
# the pass


def reprocess(config_path: Path, out: Path | None = None, settle_s: float = SETTLE_S) -> int:
    """One reprocessing pass; returns the exit code (module documentation)."""
    from pipeline.assess import assess, default_out_dir
    from pipeline.cache import HashMemo
    from pipeline.runlog import file_log, sha256

    t0 = time.perf_counter()
    cfg = load_config(config_path)
    if cfg.inbox is None:
        raise ConfigError("no inbox folder is configured", path=config_path, field="inbox",
                          fix="add 'inbox: <folder>' (where new land cover is dropped) to the configuration")
    inbox = Path(cfg.inbox)
    if not inbox.is_dir():
        if not inbox.parent.is_dir():   # likely a typo in the path: do not invent folders
            raise InputDataError("the inbox folder does not exist, nor does its parent", path=inbox,
                                 field="inbox", fix="create it, or correct 'inbox:' in the configuration")
        inbox.mkdir()
        log.info("created the inbox folder %s; drop new land cover there", inbox)
    store = store_of(cfg)
    out_dir = Path(out) if out else default_out_dir(cfg)
    store.root.mkdir(parents=True, exist_ok=True)
    quarantined = 0
    with BasinLock(store.lock), file_log(store.log), scan_memo():
        log.info("reprocess %s: inbox %s, store %s, outputs %s", cfg.basin.name, inbox, store.root,
                 out_dir)
        hashes = HashMemo(out_dir.resolve().parent / ".cache" / cfg.basin.name / "hashes.json")
        items = load_registry(store)
        candidates = scan_inbox(inbox, settle_s)
        if candidates:
            from pipeline.io.ingest import check_inputs

            current = effective_config(cfg, items, store)
            grid = check_inputs(current).grid         # the existing inputs must be sound first
            known = {i["sha256"]: i for i in items}
            # land cover first: a DEM delivered with its land cover finds the new vintage
            for c in sorted(candidates, key=lambda c: kind_of(c) == "dem"):
                try:
                    d = declare(c, current.landcover[-1].scheme)
                    digest = sha256(c.path)
                    if d.kind == "dem":
                        done = next((i for i in items if i.get("dem_sha256") == digest
                                     and int(i["year"]) == d.year), None)
                        if done is not None:
                            log.info("inbox: %s is already registered as the as-built DEM of %s; removed "
                                     "from the inbox", c.path.name, done["name"])
                            _remove_from_inbox(c)
                            continue
                        item = check_dem_candidate(c, d, current, items, store, grid)
                        register_dem(c, item, digest, store, items)
                        current = effective_config(cfg, items, store)
                        continue
                    if digest in known and int(known[digest]["year"]) == d.year:
                        log.info("inbox: %s is already registered as %s; removed from the inbox",
                                 c.path.name, known[digest]["name"])
                        _remove_from_inbox(c)
                        continue
                    if digest in known:
                        raise InputDataError(
                            f"the file is identical to the registered vintage {known[digest]['name']} "
                            f"({known[digest]['year']})", path=c.path, field="year",
                            fix="check that the right file was delivered for this year")
                    v = check_candidate(c, d, current, grid)
                    known[digest] = register(c, v, digest, store, items)
                    current = effective_config(cfg, items, store)
                except PipelineError as exc:
                    quarantine(c, exc, inbox)
                    quarantined += 1
                except FileNotFoundError:
                    log.warning("inbox: %s disappeared while it was being checked; skipped",
                                c.path.name)
        eff = effective_config(cfg, items, store)
        key = run_key(eff, hashes)
        hashes.save()
        code = EXIT_QUARANTINED if quarantined else EXIT_OK
        if up_to_date(out_dir, cfg.basin.name, key):
            log.info("nothing new for basin %s (%d vintages); outputs in %s are current (%.2f s)",
                     cfg.basin.name, len(eff.landcover), out_dir, time.perf_counter() - t0)
            return code
        log.info("assessing %s with vintages %s (assessment vintage %s)", cfg.basin.name,
                 ", ".join(f"{v.name} ({v.year})" for v in eff.landcover), eff.assessment_name)
        path = write_effective_config(eff, store.effective_config)
        final = assess(path, out=out_dir, cache=True)
        _record_published(final, cfg.basin.name, key)
        log.info("reprocess of %s done in %.1f s", cfg.basin.name, time.perf_counter() - t0)
    return code


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_text(path, text)
