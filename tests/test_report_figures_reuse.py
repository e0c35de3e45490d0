"""Figure reuse and parallel drawing of the report (pipeline.report.figures.make_figures):
a figure is taken from an earlier report only when everything it is drawn from is
unchanged, and the PNGs are the same bytes however they were produced."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pytest
import rasterio

from fixtures_run import build_run
from pipeline.deliver import previous_figures
from pipeline.io.outputs import OutputLayout
from pipeline.report import figures
from pipeline.report.fonts import rc_params


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """A fake run and its figures drawn from scratch, serially (the reference bytes)."""
    root = tmp_path_factory.mktemp("fig")
    run = build_run(root / "testbasin")
    ref = figures.make_figures(run, root / "ref", workers=1)
    return run, root, ref


def _bytes(figs):
    return {k: f.path.read_bytes() for k, f in figs.items()}


def _no_drawing(monkeypatch):
    monkeypatch.setattr(figures, "_draw_to", lambda *a: pytest.fail("a figure was drawn again"))


def test_every_png_carries_its_key(drawn):
    run, _, ref = drawn
    keys = {k: figures.png_key(f.path) for k, f in ref.items()}
    assert all(v is not None and len(v) == 64 for v in keys.values())
    assert len(set(keys.values())) == len(keys)          # one key per figure


def test_parallel_drawing_gives_the_same_bytes(drawn, tmp_path):
    run, _, ref = drawn
    par = figures.make_figures(run, tmp_path / "par", workers=2)
    assert _bytes(par) == _bytes(ref)


def test_figure_process_started_ahead_shares_the_figures(drawn, tmp_path, monkeypatch, caplog):
    """A figure process started before the report (start_helper) draws from the last figure
    while this one draws from the first: both draw some, every figure is drawn once, the
    PNGs are the serial ones, and the process is gone afterwards."""
    import logging
    import os

    run, _, ref = drawn
    if len(os.sched_getaffinity(0)) < 2:
        monkeypatch.setattr(figures.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    here: list[str] = []
    draw_to = figures._draw_to

    def counting(run_, draw, path, fkey):
        here.append(path.stem)
        draw_to(run_, draw, path, fkey)

    monkeypatch.setattr(figures, "_draw_to", counting)      # this process only (the other is spawned)
    assert figures.start_helper() and figures.default_workers(2) == 2
    with caplog.at_level(logging.DEBUG, logger="pipeline.report.figures"):
        got = figures.make_figures(run, tmp_path / "ahead")
    assert not figures._HELPER and figures.default_workers(2) == 1
    assert _bytes(got) == _bytes(ref)
    there = [r.getMessage().split()[-1] for r in caplog.records if r.getMessage().startswith("figure ")]
    assert here and there, (here, there)                    # both drew
    assert sorted(here + there) == sorted(ref)              # each figure once
    assert here[0] == next(iter(ref)) and list(ref)[-1] in there   # from either end
    assert "(2 process(es))" in caplog.text


def test_two_processes_asked_for_with_one_cpu(drawn, tmp_path, monkeypatch):
    # default_workers says 1 with one CPU, but workers=2 asked for explicitly is honoured
    run, _, ref = drawn
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not figures.start_helper() and figures.default_workers(50) == 1
    got = figures.make_figures(run, tmp_path / "forced", workers=2)
    assert _bytes(got) == _bytes(ref) and not figures._HELPER


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), OSError(24, "Too many open files")])
def test_a_figure_process_that_cannot_start_draws_here(drawn, tmp_path, monkeypatch, caplog, error):
    """Creating the second process fails (its resource tracker died at start: a broken pipe
    when the pool's lock is registered; no file handles left): a warning, the other work
    and every figure here, the serial PNGs, no process left behind."""
    import concurrent.futures
    import logging

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", fail)
    order: list[str] = []
    with caplog.at_level(logging.WARNING, logger="pipeline.report.figures"):
        got = figures.make_figures(drawn[0], tmp_path / "here", workers=2,
                                   meanwhile=lambda: order.append("meanwhile"))
    assert _bytes(got) == _bytes(drawn[2]) and not figures._HELPER
    assert order == ["meanwhile"]
    assert "cannot start a second figure process" in caplog.text and type(error).__name__ in caplog.text


def test_other_work_runs_while_the_figure_process_draws(drawn, tmp_path):
    """`meanwhile` runs once in this process after the other process has its figures: a
    figure drawn there appears while it runs (it waits for one); then every figure is
    drawn, as the serial ones."""
    import time

    run, _, ref = drawn
    out = tmp_path / "meanwhile"
    calls = []

    def other():
        calls.append(sorted(p.name for p in out.glob("*.png")))
        deadline = time.monotonic() + 120
        while not any(out.glob("*.png")):
            assert time.monotonic() < deadline, "no figure was drawn while the other work ran"
            time.sleep(0.02)

    got = figures.make_figures(run, out, workers=2, meanwhile=other)
    assert len(calls) == 1 and _bytes(got) == _bytes(ref) and not figures._HELPER


def test_other_work_comes_first_when_drawing_alone(drawn, tmp_path):
    run, _, ref = drawn
    out = tmp_path / "alone"
    calls = []
    got = figures.make_figures(run, out, workers=1,
                               meanwhile=lambda: calls.append(sorted(p.name for p in out.glob("*.png"))))
    assert calls == [[]] and _bytes(got) == _bytes(ref)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyError("x")])
def test_an_error_of_the_other_work_is_its_own(drawn, tmp_path, error):
    """write_report: an error raised by `meanwhile` (e.g. the GeoPackage's disk full) is raised
    as it is, not as a figure error; no figures folder is left and the process is stopped."""
    from pipeline.report.document import write_report

    run, _, _ = drawn

    def other():
        raise error

    with pytest.raises(type(error)) as exc:
        write_report(run, tmp_path / "report", meanwhile=other)
    assert exc.value is error
    assert not figures._HELPER
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == []


def test_unused_figure_process_is_stopped():
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: no figure process is started")
    assert figures.start_helper() and figures.start_helper()   # a second call keeps the first
    assert len(figures._HELPER) == 1
    proc = next(iter(figures._HELPER[0]._processes.values()))
    figures.stop_helper()
    assert not figures._HELPER and not proc.is_alive()


def test_unchanged_run_reuses_every_figure(drawn, tmp_path, monkeypatch):
    run, root, ref = drawn
    _no_drawing(monkeypatch)
    again = figures.make_figures(run, tmp_path / "again", reuse_from=root / "ref")
    assert _bytes(again) == _bytes(ref)


def test_changed_raster_redraws_only_its_map(drawn, tmp_path, monkeypatch):
    """Change one credit raster: that map is drawn again (and equals a fresh drawing of the
    new data); every other figure, including the other raster maps, is reused."""
    run, root, ref = drawn
    key = sorted(k for k in run.rasters if k.startswith("credits_"))[0]
    src = run.rasters[key]
    new = tmp_path / "new" / src.name
    new.parent.mkdir()
    with rasterio.open(src) as ds:
        a, prof = ds.read(1), ds.profile
    a = np.where(np.isfinite(a), a * 2.0 + 1.0, a).astype(a.dtype)
    with rasterio.open(new, "w", **prof) as dst:
        dst.write(a, 1)
    run2 = dataclasses.replace(run, rasters=dict(run.rasters, **{key: new}))
    drawn_keys = []
    real = figures._draw_to

    def record(r, draw, path, fkey):
        drawn_keys.append(path.stem)
        real(r, draw, path, fkey)

    monkeypatch.setattr(figures, "_draw_to", record)
    got = figures.make_figures(run2, tmp_path / "out", reuse_from=root / "ref", workers=1)
    assert drawn_keys == [f"map_{key}"]
    fresh = figures.make_figures(run2, tmp_path / "fresh", workers=1)
    assert _bytes(got) == _bytes(fresh)
    assert got[f"map_{key}"].path.read_bytes() != ref[f"map_{key}"].path.read_bytes()


def test_changed_scores_redraw_charts_but_not_raster_maps(drawn, tmp_path, monkeypatch):
    run, root, ref = drawn
    scores = run.site_scores.copy()
    scores.loc[scores.index[0], "WQ"] = 9 if scores.loc[scores.index[0], "WQ"] != 9 else 8
    run2 = dataclasses.replace(run, site_scores=scores)
    drawn_keys = []
    monkeypatch.setattr(figures, "_draw_to", lambda r, d, path, k: drawn_keys.append(path.stem))
    figures.make_figures(run2, tmp_path / "out", reuse_from=root / "ref", workers=1)
    assert "scores_chart" in drawn_keys and "credit_map" in drawn_keys
    assert "basin_map" not in drawn_keys                  # it draws no score
    assert not [k for k in drawn_keys if k.startswith("map_")]


def test_basin_map_redrawn_when_a_site_stage_or_outline_changes(drawn, tmp_path, monkeypatch):
    run, root, ref = drawn
    sites = run.sites.copy()
    other = next(s for s in figures.STAGES
                 if s != sites.loc[sites.index[0], "stage"])
    sites.loc[sites.index[0], "stage"] = other
    moved = run.sites.copy()
    moved.loc[moved.index[0], "geometry"] = moved.geometry.iloc[0].buffer(30)
    for changed in (sites, moved):
        drawn_keys = []
        monkeypatch.setattr(figures, "_draw_to", lambda r, d, path, k: drawn_keys.append(path.stem))
        figures.make_figures(dataclasses.replace(run, sites=changed), tmp_path / "out", reuse_from=root / "ref",
                             workers=1)
        assert "basin_map" in drawn_keys


def test_a_foreign_or_stale_png_is_not_reused(drawn, tmp_path, monkeypatch):
    """A PNG without a key, or with another key (other code, other data), is drawn again."""
    run, root, ref = drawn
    old = tmp_path / "old"
    old.mkdir()
    name = "ledger_chart"
    with matplotlib.rc_context(rc_params()):
        fig = figures.ledger_chart(run)
        fig.savefig(old / f"{name}.png", format="png", metadata={"Software": None})   # no key
    drawn_keys = []
    real = figures._draw_to
    monkeypatch.setattr(figures, "_draw_to", lambda r, d, p, k: (drawn_keys.append(p.stem), real(r, d, p, k)))
    got = figures.make_figures(run, tmp_path / "out", reuse_from=old, workers=1)
    assert drawn_keys == [k for k in ref]                 # nothing else in `old`: all drawn
    assert _bytes(got) == _bytes(ref)
    assert figures.figure_key(name, {"a": 1}, "code") != figures.figure_key(name, {"a": 1}, "code2")
    assert figures.figure_key(name, {"a": 1}, "code") != figures.figure_key(name, {"a": 2}, "code")


def test_previous_figures_is_the_published_report(tmp_path):
    staging = OutputLayout(tmp_path / ".basin.staging-123", "basin")
    assert previous_figures(staging) is None                       # nothing published yet
    (tmp_path / "basin" / "report" / "figures").mkdir(parents=True)
    assert previous_figures(staging) == tmp_path / "basin" / "report" / "figures"
    assert previous_figures(OutputLayout(tmp_path / "basin", "basin")) is None   # not a staging folder


def test_large_stream_networks_draw_only_the_largest_reaches(tmp_path, monkeypatch):
    """Above MAX_DRAWN_REACHES reaches a map draws the largest ones only (by upstream
    area); below it every reach is drawn."""
    from matplotlib.figure import Figure

    run = build_run(tmp_path / "testbasin")
    n = len(run.streams)
    assert n >= 3

    def drawn_segments(limit):
        monkeypatch.setattr(figures, "MAX_DRAWN_REACHES", limit)
        ax = Figure().add_subplot()
        figures._streams(ax, figures._MapLayers(run))
        return sum(len(c.get_paths()) for c in ax.collections)

    assert drawn_segments(10 ** 6) == n
    assert drawn_segments(2) == 2


def _pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def test_prepared_line_parts_draw_what_geopandas_draws(tmp_path):
    """`_LineParts` (layers prepared once per run) draws the same pixels, collections and axis
    labels as ``GeoSeries.plot``: all features or a subset, with per-feature widths, multi-part
    lines, polygons with holes, missing, empty and collection geometries."""
    import geopandas as gpd
    from matplotlib.figure import Figure
    from shapely.geometry import GeometryCollection, LineString, MultiLineString, Polygon, box

    run = build_run(tmp_path / "testbasin")
    x0, y0 = run.boundary.total_bounds[:2]
    extra = gpd.GeoSeries([
        MultiLineString([[(x0 + 100, y0 + 100), (x0 + 900, y0 + 400)], [(x0 + 200, y0 + 800), (x0 + 50, y0 + 50)]]),
        None,
        LineString(),
        GeometryCollection([LineString([(x0 + 300, y0 + 300), (x0 + 700, y0 + 900)]),
                            MultiLineString([[(x0, y0 + 500), (x0 + 500, y0)]])]),
        Polygon(box(x0 + 400, y0 + 400, x0 + 1400, y0 + 1400).exterior,
                [box(x0 + 600, y0 + 600, x0 + 900, y0 + 900).exterior]).boundary,
    ], crs=run.boundary.crs)
    layers = [(run.boundary.boundary, None, 1.0), (run.sites.boundary, None, 0.8),
              (run.sites.boundary, np.array([1, 3]), 0.8),
              (run.streams.geometry, np.array([0, 2]), np.linspace(0.2, 2.2, len(run.streams))),
              (extra, None, np.array([0.5, 1.0, 1.5, 2.0, 2.5])), (extra, np.array([3, 4]), 1.2)]
    with matplotlib.rc_context(rc_params()):
        for geoms, pos, lw in layers:
            ref, new = Figure(figsize=(3, 3), dpi=60), Figure(figsize=(3, 3), dpi=60)
            a, b = ref.add_subplot(), new.add_subplot()
            sub = geoms if pos is None else geoms.iloc[pos]
            width = lw if np.ndim(lw) == 0 or pos is None else lw[pos]
            sub.plot(ax=a, color="red", linewidth=width)
            figures._LineParts.of(geoms).draw(b, pos, color="red", linewidth=lw)
            assert (a.get_xlabel(), a.get_ylabel()) == (b.get_xlabel(), b.get_ylabel()) != ("", "")
            assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()
            assert [len(c.get_paths()) for c in a.collections] == [len(c.get_paths()) for c in b.collections]
            assert np.array_equal(_pixels(ref), _pixels(new))


def test_ratings_chart_of_many_sites_keeps_a_page_high_figure(tmp_path, monkeypatch):
    """Past RATINGS_LABELLED_SITES the chart stops growing one row per site: no letters in
    the cells (a colour key instead) and every k-th site named; below it every site is named."""
    run = build_run(tmp_path / "testbasin")
    n = len(run.sites)
    with matplotlib.rc_context(rc_params()):
        small = figures.ratings_chart(run)
        monkeypatch.setattr(figures, "RATINGS_LABELLED_SITES", 2)
        large = figures.ratings_chart(run)
    assert len(small.axes[0].get_yticks()) == n and len(small.axes[0].texts) > 0
    assert small.get_figheight() > large.get_figheight() == pytest.approx(1.6 + 0.35 * 2)
    assert len(large.axes[0].texts) == len(large.axes[1].texts) == 0
    assert len(large.axes[0].get_yticks()) == len(range(0, n, -(-n // 2)))
    assert large.axes[1].get_legend() is not None


def test_second_process_only_for_many_figures(monkeypatch):
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert figures.default_workers(figures.PARALLEL_FROM_FIGURES - 1) == 1
    assert figures.default_workers(figures.PARALLEL_FROM_FIGURES) == 2
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert figures.default_workers(400) == 1


def test_a_figure_process_that_dies_at_start_does_not_stall_the_report(tmp_path):
    """A spawned figure process that exits before reading anything (here: its interpreter is
    /bin/false) makes a pool error, not a hang, even for a run larger than a pipe buffer:
    its figures are drawn in the calling process, the same PNGs as a serial drawing, and a
    warning says so. Run in a child interpreter with a time limit, so that a hang fails.

    Which warning depends on a race: multiprocessing's resource tracker is spawned with the
    same interpreter, and when it has died before the pool takes its first lock, creating the
    pool raises BrokenPipeError ("cannot start", as in the test below); otherwise the pool
    is made and its process dies before finishing. Both end in the same PNGs."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(f"""
        import logging, multiprocessing, pickle, sys
        from pathlib import Path
        sys.path[:0] = {[str(Path(__file__).parent), str(Path(figures.__file__).parents[2])]!r}
        from fixtures_run import build_run
        from pipeline.report import figures
        logging.basicConfig(level=logging.WARNING)
        root = Path(sys.argv[1])
        run = build_run(root / "basin")
        run.ballast = b"x" * (1 << 18)           # pickled, the run is larger than a pipe (64 KB)
        assert len(pickle.dumps(run)) > 1 << 17
        serial = figures.make_figures(run, root / "serial", workers=1)
        multiprocessing.set_executable("/bin/false")   # the spawned process exits at once
        par = figures.make_figures(run, root / "par", workers=2)
        same = all(par[k].path.read_bytes() == f.path.read_bytes() for k, f in serial.items())
        print("same" if same and par.keys() == serial.keys() else "different")
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("same")
    assert ("a figure process stopped before finishing" in r.stderr
            or "cannot start a second figure process" in r.stderr), r.stderr[-3000:]


def test_figures_are_rgb_pngs_with_matplotlibs_pixels(drawn, tmp_path):
    """save_png writes what matplotlib's own PNG writer draws, without the alpha channel:
    the same size and colours, the figure key in its text chunk; a transparent background
    is composited over white."""
    from PIL import Image

    run, _, ref = drawn
    for f in ref.values():
        with Image.open(f.path) as im:
            assert im.mode == "RGB", f.key
    with matplotlib.rc_context(rc_params()):
        for transparent in (False, True):
            fig = matplotlib.figure.Figure(figsize=(3, 2))
            ax = fig.add_subplot()
            ax.plot([0, 1, 2], [2, 0, 1], color="tab:red")
            ax.set_title("流域 basin")
            if transparent:
                fig.patch.set_alpha(0.0)
                ax.patch.set_alpha(0.0)
            fig.savefig(tmp_path / "mpl.png", format="png", bbox_inches="tight")
            out = figures.save_png(fig, tmp_path / "rgb.png", "k" * 64)
            with Image.open(tmp_path / "mpl.png") as a, Image.open(out) as b:
                assert b.mode == "RGB" and b.size == a.size and b.info[figures.KEY_CHUNK] == "k" * 64
                white = Image.new("RGBA", a.size, (255, 255, 255, 255))
                expect = np.asarray(Image.alpha_composite(white, a.convert("RGBA")).convert("RGB"), dtype=int)
                assert np.abs(np.asarray(b, dtype=int) - expect).max() <= 1
                if transparent:
                    assert (np.asarray(a)[..., 3] < 255).any()
