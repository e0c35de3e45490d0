"""The full assessment of one basin, step by step.

validate -> align -> hydrology -> land-cover indicators per vintage -> site
indicators -> ratings, credits, ledger -> credit rasters -> GeoPackage, report.
Everything is written into a staging folder and published in one rename.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.config import REPO_ROOT, Config, load_config
from pipeline.io.ingest import Ingested, check_inputs
from pipeline.io.outputs import OutputLayout, Publisher
from pipeline.runlog import (Timings, file_log, peak_rss_mb, sha256, versions,
                             write_json_atomic)

log = logging.getLogger(__name__)


def validate(config_path: Path) -> Ingested:
    """Check the configuration and every input it names; write nothing."""
    cfg = load_config(config_path)
    ing = check_inputs(cfg)
    g = ing.grid
    log.info("configuration %s is valid", config_path)
    log.info("  basin %s: grid %d x %d cells of %g m (%.1f km2)", cfg.basin.name, g.width, g.height,
             g.res, g.size * g.cell_area_m2 / 1e6)
    log.info("  %d sites (%d restoration, %d impact); vintages %s; optional layers: %s",
             len(ing.sites), int((ing.sites.kind == "restoration").sum()),
             int((ing.sites.kind == "impact").sum()),
             ", ".join(f"{v.name} ({v.year})" for v in cfg.landcover),
             ", ".join(sorted(ing.layers)) or "none")
    for note in ing.notes:
        log.info("  note: %s", note)
    if ing.repaired:
        log.warning("  repaired geometries: %s", ", ".join(ing.repaired))
    return ing


def default_out_dir(cfg: Config) -> Path:
    return Path.cwd() / "outputs" / cfg.basin.name


def assess(config_path: Path, out: Path | None = None, chunk_size: int | None = None,
           scheduler: str | None = None, cache: bool = False) -> Path:
    """Run the whole assessment; return the published output folder.

    With `cache`, intermediate results are reused from / stored in
    `<out parent>/.cache/<basin>/` (pipeline.cache; used by `reprocess`).
    """
    cfg = load_config(config_path)
    ing = check_inputs(cfg)                      # nothing is written before this passes
    if chunk_size is not None:
        cfg = cfg.model_copy(update={"processing": cfg.processing.model_copy(
            update={"chunk_size": chunk_size})})
        ing.cfg = cfg
    scheduler = scheduler or cfg.processing.scheduler
    out_dir = Path(out) if out else default_out_dir(cfg)
    timings = Timings()
    from pipeline.parallel import dask_scheduler

    with Publisher(out_dir, cfg.basin.name) as pub, file_log(pub.layout.log), \
            dask_scheduler(scheduler, cfg.processing.workers):
        layout = pub.layout
        log.info("assessing basin %s (%s) -> %s", cfg.basin.name, cfg.basin.title or "", out_dir)
        vers = versions()
        log.info("versions: %s", json.dumps(vers, ensure_ascii=False))
        log.info("configuration: %s", cfg.model_dump_json())
        _remove_dead_work(pub.parent, cfg.basin.name)
        work = Path(tempfile.mkdtemp(prefix=f".work-{cfg.basin.name}-{os.getpid()}-", dir=pub.parent))
        try:
            from pipeline.run import run_steps

            step_cache = None
            if cache:
                from pipeline.cache import StepCache

                step_cache = StepCache(pub.parent / ".cache" / cfg.basin.name)
            outputs = run_steps(ing, layout, work, timings, cache=step_cache)
            if step_cache is not None:
                step_cache.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if step_cache is not None:
            # most outputs of a reprocess are hard links to cache entries or to the previous
            # report's figures: their digests are remembered (5e7 cells: 1.5-2 s of hashing)
            from pipeline.cache import HashMemo

            out_hashes = HashMemo(step_cache.root / "output_hashes.json", by_inode=True)
            manifest = _manifest(cfg, ing, vers, timings, layout, outputs, step_cache.sources, out_hashes)
            out_hashes.save()
            step_cache.sources.save()
        else:
            manifest = _manifest(cfg, ing, vers, timings, layout, outputs)
        write_json_atomic(layout.manifest, manifest)
        log.info("finished in %.1f s, peak RSS %.0f MB", timings.total, peak_rss_mb())
        final = pub.publish()
    print(f"outputs written to {final}")
    return final


def _remove_dead_work(parent: Path, basin: str) -> None:
    """Remove what killed runs left: their work folders (``.work-<basin>-<pid>-*`` beside the
    outputs: aligned inputs, intermediate rasters) and their temporary tile folders
    (pipeline.ops.tiles.remove_stale_stores). A run that ends, even by an error, removes
    its own; SIGKILL, the out-of-memory killer or a reboot do not let it."""
    from pipeline.io.outputs import remove_orphans
    from pipeline.ops.tiles import remove_stale_stores

    for p in remove_orphans(parent, f".work-{basin}-"):
        log.info("removed the work folder of a killed run: %s", p)
    remove_stale_stores()


def _manifest(cfg: Config, ing: Ingested, vers: dict, timings: Timings, layout: OutputLayout,
              outputs: dict, input_sha256=sha256, output_sha256=sha256) -> dict:
    """The run's manifest; the sha256 of inputs and outputs by the given functions (memos
    of pipeline.cache.HashMemo in a cached run, else computed)."""
    inputs = []
    for role, path in cfg.input_files():
        p = Path(path)
        inputs.append({"role": role, "path": _rel(p), "sha256": input_sha256(p) if p.is_file() else None,
                       "bytes": p.stat().st_size if p.is_file() else None})
    files = sorted(p for p in layout.root.rglob("*") if p.is_file() and p.name != "manifest.json"
                   and p.name != "run.log")
    return {
        "basin": cfg.basin.name,
        "title": cfg.basin.title,
        "assessment_date": cfg.assessment_date.isoformat(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_file": _rel(cfg.source) if cfg.source else None,
        "config": json.loads(cfg.model_dump_json()),
        "grid": ing.grid.describe(),
        "inputs": inputs,
        "versions": vers,
        "timings_s": dict(timings.steps, total=timings.total),
        "peak_rss_mb": peak_rss_mb(),
        "repaired_geometries": ing.repaired,
        "notes": ing.notes + outputs.get("notes", []),
        "outputs": [{"path": str(p.relative_to(layout.root)), "sha256": output_sha256(p),
                     "bytes": p.stat().st_size} for p in files],
    }


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)
