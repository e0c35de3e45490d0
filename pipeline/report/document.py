"""write_report: the technical report as index.html (+ figures/) and report.pdf."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import OutputError
from pipeline.report import content, figures, html, pdf
from pipeline.report.model import RunOutputs, atomic_path, validate_run, write_text

log = logging.getLogger(__name__)


def write_report(run: RunOutputs, report_dir, reuse_figures_from: Path | None = None,
                 meanwhile: Callable[[], object] | None = None) -> tuple[Path, Path]:
    """Write `report_dir/index.html`, `report_dir/figures/*.png` and `report_dir/report.pdf`.

    Figures are drawn into a temporary folder beside report_dir and moved into
    place before the HTML and PDF that reference them are (atomically) written.
    `reuse_figures_from` (an earlier report's figures folder, read only) supplies the
    figures whose inputs did not change (see figures.make_figures). `meanwhile` is
    other work of the run done while a second process draws (figures.make_figures).
    """
    validate_run(run)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = report_dir / "figures"
    staging = Path(tempfile.mkdtemp(prefix=".figures.", dir=report_dir))
    theirs: list[BaseException] = []     # an error of `meanwhile` is its own, not the figures'

    def other_work() -> None:
        try:
            meanwhile()
        except BaseException as exc:
            theirs.append(exc)
            raise

    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the report folder is shared with analysts
        figs = figures.make_figures(run, staging, reuse_from=reuse_figures_from,
                                    meanwhile=other_work if meanwhile is not None else None)
        if fig_dir.exists():
            shutil.rmtree(fig_dir)
        os.replace(staging, fig_dir)
    except OSError as exc:
        if theirs:
            raise
        raise OutputError(f"cannot write report figures: {exc}", path=fig_dir,
                          fix="check free disk space and permissions of the output folder") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    figs = {k: figures.FigureFile(k, fig_dir / f.path.name, f.caption) for k, f in figs.items()}
    sections = content.build(run, list(figs))
    html_path = write_text(report_dir / "index.html", html.render(run, sections, figs, report_dir))
    pdf_path = report_dir / "report.pdf"
    with atomic_path(pdf_path, suffix=".pdf") as tmp:
        pdf.render(run, sections, figs, tmp)
    log.info("wrote report %s and %s (%d figures)", html_path, pdf_path, len(figs))
    return html_path, pdf_path
