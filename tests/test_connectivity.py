"""Patch graph, PC, ECA and dPC (pipeline.indicators.connectivity) against hand-worked
values and a brute-force networkx computation (all-pairs best-product paths, every
patch removed in turn)."""

from __future__ import annotations

import math

import dask.array as dsa
import networkx as nx
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.indicators.connectivity import (boundary_points, compute_connectivity,
                                              connectivity_from_graph, patch_edges, raster_patch_edges)
from pipeline.ops.landcover import label_patches



def as_da(a, chunks, cell=30.0, cell_x=None):
    """Dask-backed (y, x) DataArray on a projected grid with `cell` metre cells."""
    import rioxarray  # noqa: F401
    import xarray as xr
    from rasterio.transform import from_origin
    cx = cell if cell_x is None else cell_x
    da = xr.DataArray(dsa.from_array(a, chunks=chunks), dims=("y", "x"),
                      coords={"y": 1e5 - cell * (np.arange(a.shape[0]) + 0.5),
                              "x": 5e5 + cx * (np.arange(a.shape[1]) + 0.5)})
    return da.rio.write_crs("EPSG:32650").rio.write_transform(from_origin(5e5, 1e5, cx, cell))

EIGHT = np.ones((3, 3), bool)


def brute_gaps(labels, cy, cx):
    """Edge-to-edge distance of every patch pair, from every pair of cells."""
    ids = labels[labels > 0]
    yy, xx = np.nonzero(labels)
    gaps = {}
    for a in range(len(ids)):
        gy = np.maximum(np.abs(yy - yy[a]) * cy - cy, 0.0)
        gx = np.maximum(np.abs(xx - xx[a]) * cx - cx, 0.0)
        g = np.hypot(gy, gx)
        for b in np.nonzero(ids > ids[a])[0]:
            key = (int(ids[a]), int(ids[b]))
            gaps[key] = min(gaps.get(key, np.inf), g[b])
    return gaps


def brute_pc(areas, gaps, dispersal):
    """N = sum_i sum_j a_i a_j p*_ij and dPC_k by removing each node (networkx)."""
    k = math.log(2) / dispersal
    G = nx.Graph()
    G.add_nodes_from(range(1, len(areas) + 1))
    for (i, j), d in gaps.items():
        if d <= dispersal:
            G.add_edge(i, j, w=k * d)

    def total(H):
        s = 0.0
        for i, dist in nx.all_pairs_dijkstra_path_length(H, weight="w"):
            for j, v in dist.items():
                s += areas[i - 1] * areas[j - 1] * math.exp(-v)
        return s

    N = total(G)
    dpc = []
    for node in range(1, len(areas) + 1):
        H = G.copy()
        H.remove_node(node)
        dpc.append(100 * (N - total(H)) / N)
    return N, np.array(dpc)


def test_three_patch_hand_worked_graph():
    # A(1 ha) -- 200 m -- B(2 ha) -- 200 m -- C(3 ha); A-C not linked. dispersal 200 m:
    # p_AB = p_BC = 0.5, p*_AC = 0.5*0.5 = 0.25 (through B).
    # N = 1+4+9 + 2*(1*2*0.5 + 2*3*0.5 + 1*3*0.25) = 14 + 2*4.75 = 23.5
    # PC = 23.5 / 21^2 (A_L = 21 ha); ECA = sqrt(23.5)
    # removing B: N' = 1 + 9 = 10 -> dPC_B = 100*13.5/23.5 = 57.4468
    #   intra_B = 100*4/23.5 = 17.0213; flux_B = 100*2*2*(1*0.5+3*0.5)/23.5 = 34.0426
    #   connector_B = 100*2*1*3*0.25/23.5 = 6.3830 (A-C lost its path)
    # removing A: N' = 4+9+2*3 = 19 -> dPC_A = 100*4.5/23.5 = 19.1489 (intra 4.2553, flux 14.8936)
    # removing C: N' = 1+4+2*1 = 7 -> dPC_C = 100*16.5/23.5 = 70.2128
    r = connectivity_from_graph(np.array([1.0, 2.0, 3.0]), np.array([0, 1]), np.array([1, 2]),
                                np.array([200.0, 200.0]), 200.0, 21.0, p_min=0)
    t = r.table
    assert r.pc == pytest.approx(23.5 / 441)
    assert r.eca_ha == pytest.approx(math.sqrt(23.5))
    np.testing.assert_allclose(t.dpc, [100 * 4.5 / 23.5, 100 * 13.5 / 23.5, 100 * 16.5 / 23.5], rtol=1e-12)
    np.testing.assert_allclose(t.dpc_intra, [100 / 23.5, 400 / 23.5, 900 / 23.5], rtol=1e-12)
    np.testing.assert_allclose(t.dpc_flux, [100 * 2 * 1 * (2 * 0.5 + 3 * 0.25) / 23.5,
                                            100 * 2 * 2 * (0.5 + 1.5) / 23.5,
                                            100 * 2 * 3 * (2 * 0.5 + 0.25) / 23.5], rtol=1e-12)
    np.testing.assert_allclose(t.dpc_connector, [0, 150 / 23.5, 0], atol=1e-12)


def test_three_patch_hand_worked_raster():
    # 100 m cells, dispersal 200 m. A = 1 cell (0,0); B = 2 cells col 3 rows 0-1;
    # C = 3 cells col 6 rows 0-2. Gaps: A-B 2 cells = 200 m, B-C 200 m, A-C 500 m.
    # Same numbers as above: a = 1, 2, 3 ha; A_L = 3 x 7 cells = 21 ha.
    lab = np.zeros((3, 7), np.uint8)
    lab[0, 0] = 1
    lab[0:2, 3] = 1
    lab[0:3, 6] = 1
    p = label_patches(as_da(lab, (2, 3), cell=100.0))
    r = compute_connectivity(p.labels, p.cells, 100.0, 100.0, 21.0, dispersal_distance_m=200.0, p_min=0)
    assert r.table.area_ha.tolist() == [1.0, 2.0, 3.0]
    assert r.n_edges == 2
    assert r.pc == pytest.approx(23.5 / 441)
    assert r.table.dpc[1] == pytest.approx(100 * 13.5 / 23.5)


def test_p_min_cut_off_drops_weak_pairs():
    # chain of 3 equal patches, links of p = 0.5: p*_13 = 0.25. With p_min = 0.3 the
    # A-C pair no longer counts: N = 3 + 2*(0.5+0.5) = 5 instead of 5.5.
    a = np.ones(3)
    ei, ej, d = np.array([0, 1]), np.array([1, 2]), np.array([100.0, 100.0])
    assert connectivity_from_graph(a, ei, ej, d, 100.0, 10.0, p_min=0).eca_ha ** 2 == pytest.approx(5.5)
    assert connectivity_from_graph(a, ei, ej, d, 100.0, 10.0, p_min=0.3).eca_ha ** 2 == pytest.approx(5.0)


@st.composite
def landscapes(draw):
    ny = draw(st.integers(4, 22))
    nx_ = draw(st.integers(4, 22))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    m = rng.random((ny, nx_)) < draw(st.floats(0.05, 0.45))
    cy = draw(st.sampled_from([10.0, 30.0]))
    cx = draw(st.sampled_from([10.0, 30.0]))
    disp = draw(st.sampled_from([30.0, 50.0, 90.0]))
    ch = (draw(st.integers(1, ny)), draw(st.integers(1, nx_)))
    return m, cy, cx, disp, ch


@settings(max_examples=25, deadline=None)
@given(landscapes())
def test_matches_networkx_bruteforce_on_random_landscapes(case):
    m, cy, cx, disp, ch = case
    ref_lab, n = ndi.label(m, structure=EIGHT)
    if n == 0:
        return
    p = label_patches(as_da(m.astype(np.uint8), ch, cell=cy, cell_x=cx))
    np.testing.assert_array_equal(p.labels.values, ref_lab)
    gaps = brute_gaps(ref_lab, cy, cx)
    # the KD-tree edge list equals the brute-force list of pairs within the distance
    rows, cols, ids = boundary_points(p.labels)
    ei, ej, dd = patch_edges(rows, cols, ids, cy, cx, disp, strip_points=7)
    expected = {k: v for k, v in gaps.items() if v <= disp + 1e-9}
    assert dict(zip(zip(ei.tolist(), ej.tolist()), dd.tolist())) == pytest.approx(expected)
    # the tiled raster scan (used by compute_connectivity) gives the same pairs and gaps
    ri, rj, rd = raster_patch_edges(p.labels, n, cy, cx, disp)
    assert dict(zip(zip(ri.tolist(), rj.tolist()), rd.tolist())) == pytest.approx(expected)
    areas = np.bincount(ref_lab.ravel())[1:] * cy * cx / 1e4
    A_L = m.size * cy * cx / 1e4
    r = compute_connectivity(p.labels, p.cells, cy, cx, A_L, dispersal_distance_m=disp, p_min=0)
    N, dpc = brute_pc(areas, gaps, disp)
    assert r.eca_ha ** 2 == pytest.approx(N, rel=1e-10)
    assert r.pc == pytest.approx(N / A_L ** 2, rel=1e-10)
    np.testing.assert_allclose(r.table.dpc.to_numpy(), dpc, rtol=1e-8, atol=1e-10)
    parts = r.table.dpc_intra + r.table.dpc_flux + r.table.dpc_connector
    np.testing.assert_allclose(parts.to_numpy(), r.table.dpc.to_numpy(), rtol=1e-12)
    assert (r.table.dpc_connector >= 0).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_graph_level_dpc_equals_node_removal(n, seed, density):
    """Random graphs (incl. ties and cycles) with the default cut-off disabled."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) * 5 + 0.1
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < density]
    ei = np.array([q[0] for q in pairs], np.int64)
    ej = np.array([q[1] for q in pairs], np.int64)
    d = rng.choice([100.0, 200.0, 300.0], size=len(pairs))      # many equal lengths: ties
    r = connectivity_from_graph(a, ei, ej, d, 300.0, 1000.0, p_min=0)
    N, dpc = brute_pc(a, {(int(i) + 1, int(j) + 1): float(x) for i, j, x in zip(ei, ej, d)}, 300.0)
    assert r.eca_ha ** 2 == pytest.approx(N, rel=1e-10)
    np.testing.assert_allclose(r.table.dpc.to_numpy(), dpc, rtol=1e-8, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**31 - 1), st.floats(0.05, 0.6), st.sampled_from([np.inf, 1.0, 2.5]))
def test_connector_repair_equals_node_removal(n, seed, density, limit):
    """The subtree repair (kernels.graph.connector_losses) equals removing each node k
    and searching again from every other source: sum_i a_i (R_i - a_k p*_ik - R_i^(-k)).
    Weights drawn from a small set so equal-length paths (ties) are common."""
    from scipy.sparse import coo_matrix

    from pipeline.kernels.graph import connector_losses, row_sums, tree_terms
    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < density]
    ei = np.array([q[0] for q in pairs], np.int64)
    ej = np.array([q[1] for q in pairs], np.int64)
    w = rng.choice([0.2, 0.4, 0.6, 1.0], size=len(pairs))
    g = coo_matrix((np.concatenate([w, w]), (np.concatenate([ei, ej]), np.concatenate([ej, ei]))),
                   shape=(n, n)).tocsr()
    args = (g.indptr.astype(np.int64), g.indices.astype(np.int64), g.data.astype(np.float64))
    a = rng.random(n) + 0.1
    src = np.arange(n, dtype=np.int64)
    R, bsum, cost, _ = tree_terms(*args, a, src, limit)
    np.testing.assert_allclose(R, row_sums(*args, a, src, -1, limit)[0], rtol=1e-12)
    got, _ = connector_losses(*args, a, src, limit, np.ones(n, bool))
    from scipy.sparse.csgraph import dijkstra
    P = np.exp(-dijkstra(g, directed=False, limit=limit))
    for k in range(n):
        others = src[src != k]
        Rk = row_sums(*args, a, others, k, limit)[0]
        want = float(np.sum(a[others] * (R[others] - a[k] * P[others, k] - Rk)))
        assert got[k] == pytest.approx(want, rel=1e-9, abs=1e-12)
        # nodes that are no source's interior node need no repair; the bound holds
        if cost[k] == 0:
            assert got[k] == 0.0
        assert got[k] <= bsum[k] * R[k] * (1 + 1e-9) + 1e-12


def test_many_patches_scale_and_work_budget():
    """52 900 single-cell patches on a 2-cell lattice (30 m cells, gaps 30 m along rows
    and columns, 42.4 m diagonally > dispersal 30 m): a 4-neighbour grid graph with
    p = 0.5 per link. p_min = 0.01 keeps searches local (p* >= 0.01 <=> <= 6 links).
    Checked against closed forms that hold for any graph: parts add up, sum of intra
    parts = 100 sum a^2 / N, sum of flux parts = 200 (N - sum a^2) / N; the work
    budget leaves some connector parts out, flagged, with dpc = intra + flux there and
    the computed ones within their upper bound."""
    m = np.zeros((460, 460), np.uint8)
    m[::2, ::2] = 1
    p = label_patches(as_da(m, (128, 200), cell=30.0))
    assert p.n == 52_900
    r = compute_connectivity(p.labels, p.cells, 30.0, 30.0, m.size * 0.09, dispersal_distance_m=30.0,
                             p_min=0.01, max_work=3e6)
    t = r.table
    assert r.n_edges == 2 * 229 * 230
    N = r.eca_ha ** 2
    sa2 = float(np.sum(t.area_ha ** 2))
    assert t.dpc_intra.sum() == pytest.approx(100 * sa2 / N)
    assert t.dpc_flux.sum() == pytest.approx(200 * (N - sa2) / N)
    # a corner patch: its 2 links reach p*=0.5 at 1 link ... the row sum of an interior
    # node is 1 + 4*0.5 + 8*0.25 + 12*0.125 + 16/16 + 20/32 + 24/64 (links <= 6, none cut)
    inner = t.set_index("patch_id").loc[int(p.labels.values[230, 230])]
    R = 1 + 4 * 0.5 + 8 * 0.25 + 12 * 0.125 + 16 / 16 + 20 / 32 + 24 / 64
    a = 0.09
    assert inner.dpc_flux == pytest.approx(100 * 2 * a * a * (R - 1) / N)
    exact = t.dpc_connector_exact.to_numpy()
    assert exact.any() and (~exact).any()
    assert np.isnan(t.dpc_connector[~exact]).all()
    np.testing.assert_allclose(t.dpc[~exact], (t.dpc_intra + t.dpc_flux)[~exact])
    done = exact & (t.dpc_connector_bound > 0)
    assert (t.dpc_connector[done] <= t.dpc_connector_bound[done] * (1 + 1e-9)).all()
    assert (t.dpc_connector[done] > 0).any()


def test_boundary_points_cross_chunk_edges():
    m = np.zeros((6, 6), np.uint8)
    m[1:5, 1:5] = 1            # 4x4 block: 12 boundary cells, 4 interior
    p = label_patches(as_da(m, (3, 3)))
    rows, cols, ids = boundary_points(p.labels)
    assert len(rows) == 12 and set(ids.tolist()) == {1}
    assert (2, 2) not in set(zip(rows.tolist(), cols.tolist()))
    p1 = label_patches(as_da(m, (6, 6)))
    r1 = boundary_points(p1.labels)
    assert sorted(zip(*[x.tolist() for x in r1])) == sorted(zip(rows.tolist(), cols.tolist(), ids.tolist()))


def test_dask_labels_input_accepted():
    lab = dsa.from_array(np.array([[1, 0, 2]], np.int32), chunks=(1, 1))
    rows, cols, ids = boundary_points(lab)
    assert sorted(ids.tolist()) == [1, 2]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.floats(0.05, 0.5), st.sampled_from([np.inf, 1.0, 2.5]))
def test_dijkstra_kernel_equals_scipy(n, seed, density, limit):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    from pipeline.kernels.graph import distances_from, row_sums
    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < density]
    ei = np.array([q[0] for q in pairs], np.int64)
    ej = np.array([q[1] for q in pairs], np.int64)
    w = rng.choice([0.3, 0.5, 0.7, 1.1], size=len(pairs))
    g = coo_matrix((np.concatenate([w, w]), (np.concatenate([ei, ej]), np.concatenate([ej, ei]))),
                   shape=(n, n)).tocsr()
    ref = dijkstra(g, directed=False, limit=limit)
    args = (g.indptr.astype(np.int64), g.indices.astype(np.int64), g.data.astype(np.float64))
    got = np.array([distances_from(*args, n, s, limit) for s in range(n)])
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    a = rng.random(n)
    R, *_ = row_sums(*args, a, np.arange(n, dtype=np.int64), -1, limit)
    np.testing.assert_allclose(R, np.exp(-ref) @ a, rtol=1e-12)
    # removing node 0: equals scipy on the graph without node 0
    if n > 1:
        R0, *_ = row_sums(*args, a, np.arange(1, n, dtype=np.int64), 0, limit)
        ref0 = dijkstra(g[1:, 1:], directed=False, limit=limit)
        np.testing.assert_allclose(R0, np.exp(-ref0) @ a[1:], rtol=1e-12)
