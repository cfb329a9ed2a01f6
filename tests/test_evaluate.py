"""neus_stage.evaluate: the DTU protocol against the fixture's reference numbers, generic Chamfer / F-score on
analytic shapes, alignment, and the user-facing errors for bad input."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from neus_stage.errors import StageError
from neus_stage.evaluate import evaluate_dtu, evaluate_generic
from neus_stage.geometry.cameras import Similarity
from neus_stage.geometry.distances import sample_surface, spatial_order
from neus_stage.geometry.dtu import dtu_sample_mesh, random_greedy_thin

trimesh = pytest.importorskip("trimesh")


# ------------------------------------------------------------------------------------------ helpers
def _write_mesh(path: Path, V: np.ndarray, F: np.ndarray) -> Path:
    trimesh.Trimesh(np.asarray(V, float), np.asarray(F, int), process=False).export(path)
    return path


def _sphere(radius: float, subdivisions: int = 5, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(s.vertices) + np.asarray(center), np.asarray(s.faces)


def _read_ply_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.load(path, process=False)
    return np.asarray(m.vertices, float), np.asarray(m.faces, int)


def _similarity(scale: float, rotvec, t) -> Similarity:
    return Similarity(scale, Rotation.from_rotvec(rotvec).as_matrix(), np.asarray(t, float), 0.0)


def _inverse(s: Similarity) -> Similarity:
    return Similarity(1.0 / s.scale, s.R.T, -(s.R.T @ s.t) / s.scale, 0.0)


def _expected(fixture: Path) -> dict[str, dict[str, str]]:
    with open(fixture / "expected.csv") as fh:
        return {r["mesh"]: r for r in csv.DictReader(fh)}


# ------------------------------------------------------------------------------------- DTU protocol
@pytest.mark.parametrize("name", ["good", "hole_and_floaters", "shifted", "with_far_junk"])
def test_dtu_fixture_matches_reference(dtu_eval_fixture: Path, tmp_path: Path, name: str) -> None:
    exp = _expected(dtu_eval_fixture)[name]
    out = tmp_path / "eval.json"
    res = evaluate_dtu(dtu_eval_fixture / "meshes" / f"{name}.ply", dtu_eval_fixture, int(exp["scan"]), out)
    for key in ("accuracy", "completeness", "overall"):
        ref = float(exp[f"{key}_mm"])
        assert res[key] == pytest.approx(ref, rel=5e-3), (key, res[key], ref)
    on_disk = json.loads(out.read_text())
    assert on_disk["overall"] == res["overall"]
    assert on_disk["units"] == "mm" and on_disk["scan"] == int(exp["scan"])
    assert on_disk["parameters"] == {"downsample": 0.2, "patch": 60.0, "max_dist": 20.0, "seed": 0}
    assert {"sample", "thin", "accuracy", "completeness", "total"} <= set(on_disk["timings_s"])
    assert on_disk["n_points"]["in_obs"] <= on_disk["n_points"]["in_box"] <= on_disk["n_points"]["thinned"]
    assert "alignment" not in on_disk


def _reference_sample(V: np.ndarray, F: np.ndarray, thresh: float = 0.2) -> np.ndarray:
    """DTUeval-python's per-triangle sampling loop, verbatim in its arithmetic."""
    tri_vert = V[F]
    v1 = tri_vert[:, 1] - tri_vert[:, 0]
    v2 = tri_vert[:, 2] - tri_vert[:, 0]
    l1 = np.linalg.norm(v1, axis=-1, keepdims=True)
    l2 = np.linalg.norm(v2, axis=-1, keepdims=True)
    area2 = np.linalg.norm(np.cross(v1, v2), axis=-1, keepdims=True)
    nz = (area2 > 0)[:, 0]
    l1, l2, area2, v1, v2, tri_vert = (a[nz] for a in (l1, l2, area2, v1, v2, tri_vert))
    thr = thresh * np.sqrt(l1 * l2 / area2)
    n1, n2 = np.floor(l1 / thr), np.floor(l2 / thr)
    pts = [V]
    for i in range(len(n1)):
        c = np.mgrid[: n1[i, 0] + 1, : n2[i, 0] + 1]
        c += 0.5
        c[0] /= max(n1[i, 0], 1e-7)
        c[1] /= max(n2[i, 0], 1e-7)
        c = np.transpose(c, (1, 2, 0))
        k = c[c.sum(axis=-1) < 1]
        pts.append(v1[i : i + 1] * k[:, :1] + v2[i : i + 1] * k[:, 1:] + tri_vert[i : i + 1, 0])
    return np.concatenate(pts, axis=0)


def test_dtu_sampling_is_the_reference_point_set() -> None:
    rng = np.random.default_rng(3)
    V = rng.uniform(-2, 2, size=(60, 3))
    F = rng.integers(0, 60, size=(150, 3))
    F[:5, 2] = F[:5, 1]  # degenerate faces: skipped, their vertices still count
    V[F[5, 2]] = V[F[5, 0]] + 2 * (V[F[5, 1]] - V[F[5, 0]])  # a collinear (zero-area) face
    ours = dtu_sample_mesh(V, F, chunk=500)  # a small chunk exercises the chunking
    ref = _reference_sample(V, F)
    assert ours.shape == ref.shape
    order = lambda p: p[np.lexsort(p.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(order(ours), order(ref))


def test_random_greedy_thinning_equals_the_sequential_loop() -> None:
    rng = np.random.default_rng(0)
    P = rng.uniform(0, 1, size=(4000, 3)) * [1, 1, 0.05]
    P = np.concatenate([P, P[:50]])  # exact duplicates
    r = 0.03
    keep = random_greedy_thin(P, r, np.random.default_rng(7))
    prio = np.random.default_rng(7).permutation(len(P))  # the same visiting order
    tree = cKDTree(P)
    mask = np.ones(len(P), bool)
    for cur in np.argsort(prio):
        if mask[cur]:
            mask[tree.query_ball_point(P[cur], r)] = False
            mask[cur] = True
    np.testing.assert_array_equal(keep, mask)
    kept = P[keep]
    assert cKDTree(kept).query(kept, k=2)[0][:, 1].min() > r  # no two kept points within r
    assert cKDTree(kept).query(P)[0].max() <= r  # every dropped point is covered


def test_spatial_order_is_a_permutation() -> None:
    P = np.random.default_rng(1).normal(size=(1000, 3))
    assert np.array_equal(np.sort(spatial_order(P)), np.arange(1000))


def test_dtu_alignment_is_applied_and_recorded(dtu_eval_fixture: Path, tmp_path: Path) -> None:
    exp = _expected(dtu_eval_fixture)["good"]
    V, F = _read_ply_mesh(dtu_eval_fixture / "meshes" / "good.ply")
    sim = _similarity(1 / 300.0, [0.3, -0.5, 1.1], [0.2, -0.1, 0.05])  # e.g. the mesh in a normalised frame
    moved = _write_mesh(tmp_path / "moved.ply", sim.apply(V), F)
    inv = _inverse(sim)
    res = evaluate_dtu(moved, dtu_eval_fixture, 99, tmp_path / "eval.json", alignment=inv)
    assert res["overall"] == pytest.approx(float(exp["overall_mm"]), rel=5e-3)
    assert res["alignment"]["scale"] == pytest.approx(300.0)
    assert json.loads((tmp_path / "eval.json").read_text())["alignment"]["matrix"] == inv.to_json()["matrix"]


def test_dtu_mesh_in_the_wrong_frame_says_so(dtu_eval_fixture: Path, tmp_path: Path) -> None:
    V, F = _read_ply_mesh(dtu_eval_fixture / "meshes" / "good.ply")
    normalised = _write_mesh(tmp_path / "normalised.ply", (V - [0, 0, 600]) / 60.0, F)
    with pytest.raises(StageError) as exc:
        evaluate_dtu(normalised, dtu_eval_fixture, 99, tmp_path / "eval.json")
    msg = str(exc.value)
    assert "normalised.ply" in msg and "0 samples" in msg and "wrong frame" in msg and "scale_mat" in msg
    assert not (tmp_path / "eval.json").exists()


def test_dtu_huge_mesh_is_refused_before_sampling(dtu_eval_fixture: Path, tmp_path: Path) -> None:
    V = np.array([[-5e3, -5e3, 600.0], [5e3, -5e3, 600.0], [5e3, 5e3, 600.0], [-5e3, 5e3, 600.0]])  # 10 m square
    mesh = _write_mesh(tmp_path / "metres_as_mm.ply", V, np.array([[0, 1, 2], [0, 2, 3]]))
    with pytest.raises(StageError, match=r"metres_as_mm\.ply: sampling every 0.2 mm would give about .* units"):
        evaluate_dtu(mesh, dtu_eval_fixture, 99, tmp_path / "eval.json")


@pytest.mark.parametrize("missing", ["ObsMask/ObsMask99_10.mat", "ObsMask/Plane99.mat", "Points/stl/stl099_total.ply"])
def test_dtu_missing_file_names_it(dtu_eval_fixture: Path, tmp_path: Path, missing: str) -> None:
    root = tmp_path / "dtu"
    for rel in ["ObsMask/ObsMask99_10.mat", "ObsMask/Plane99.mat", "Points/stl/stl099_total.ply"]:
        if rel != missing:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(dtu_eval_fixture / rel, root / rel)
    with pytest.raises(StageError) as exc:
        evaluate_dtu(dtu_eval_fixture / "meshes" / "good.ply", root, 99, tmp_path / "eval.json")
    assert Path(missing).name in str(exc.value) and "expected layout" in str(exc.value)


def test_dtu_root_missing(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="DTU evaluation root not found"):
        evaluate_dtu(tmp_path / "m.ply", tmp_path / "nope", 99, tmp_path / "eval.json")


# ------------------------------------------------------------------------------------------ generic
@pytest.fixture(scope="module")
def spheres(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("spheres")
    out = {"gt": _write_mesh(d / "gt.ply", *_sphere(1.0)), "pred": _write_mesh(d / "pred.ply", *_sphere(1.01))}
    V, F = _sphere(1.0)
    upper = F[V[F].mean(1)[:, 2] > 0]
    out["half"] = _write_mesh(d / "half.ply", V, upper)
    areas = trimesh.Trimesh(V, F, process=False).area_faces
    pts = sample_surface(V, F, areas, 100_000, np.random.default_rng(0))
    out["gt_cloud"] = d / "gt_cloud.ply"
    trimesh.PointCloud(pts).export(out["gt_cloud"])
    return out


def test_generic_concentric_spheres(spheres: dict[str, Path], tmp_path: Path) -> None:
    res = evaluate_generic(
        spheres["pred"], spheres["gt"], tmp_path / "eval.json", thresholds=[0.005, 0.02], n_samples=50_000
    )
    assert res["accuracy"] == pytest.approx(0.01, rel=0.02)
    assert res["completeness"] == pytest.approx(0.01, rel=0.02)
    assert res["overall"] == pytest.approx(0.01, rel=0.02)
    assert res["accuracy_median"] == pytest.approx(0.01, rel=0.02)
    diag = 2 * np.sqrt(3)
    assert res["gt_bbox_diag"] == pytest.approx(diag, rel=1e-3)
    assert res["chamfer_pct_diag"]["overall"] == pytest.approx(100 * 0.01 / diag, rel=0.02)
    f_tight, f_loose = res["fscores"]
    assert f_tight["fscore"] == 0.0 and f_loose["fscore"] == 1.0
    assert f_loose["threshold_pct_diag"] == pytest.approx(100 * 0.02 / diag, rel=1e-3)
    on_disk = json.loads((tmp_path / "eval.json").read_text())
    assert on_disk["parameters"]["n_samples"] == 50_000 and on_disk["n_points"]["mesh_samples"] == 50_000


def test_generic_default_thresholds_and_fscore_of_a_partial_mesh(spheres: dict[str, Path], tmp_path: Path) -> None:
    res = evaluate_generic(spheres["half"], spheres["gt"], tmp_path / "eval.json", n_samples=40_000)
    diag = 2 * np.sqrt(3)
    assert [r["threshold"] for r in res["fscores"]] == pytest.approx([0.005 * diag, 0.01 * diag, 0.02 * diag])
    assert [r["threshold_pct_diag"] for r in res["fscores"]] == pytest.approx([0.5, 1.0, 2.0])
    assert res["accuracy"] < 1e-3  # every predicted point lies on the GT
    for row in res["fscores"]:
        recall = 0.5 + row["threshold"] / 2  # the lower half plus the band z in [-t, 0] (area share t / 2)
        assert row["precision"] == pytest.approx(1.0)
        assert row["recall"] == pytest.approx(recall, abs=0.01)
        assert row["fscore"] == pytest.approx(2 * recall / (1 + recall), abs=0.01)
    assert res["completeness"] > 0.2  # the missing half is far from the mesh


def test_generic_against_a_point_cloud_with_error_cloud(spheres: dict[str, Path], tmp_path: Path) -> None:
    err = tmp_path / "err.ply"
    res = evaluate_generic(
        spheres["pred"], spheres["gt_cloud"], tmp_path / "eval.json", n_samples=20_000, error_cloud=err
    )
    assert res["gt_kind"] == "point cloud"
    assert res["completeness"] == pytest.approx(0.01, rel=0.03)  # GT points -> exact mesh surface
    assert 0.01 <= res["accuracy"] < 0.013  # nearest GT point: a little above the true 0.01
    assert res["n_points"]["gt_samples"] == 20_000  # a random subset of the 100k GT points
    cloud = trimesh.load(err, process=False)
    assert len(cloud.vertices) == 20_000
    data = err.read_bytes()
    assert b"property float error" in data and b"property uchar red" in data


def test_generic_alignment_recovers_the_original(spheres: dict[str, Path], tmp_path: Path) -> None:
    V, F = _sphere(1.01, subdivisions=5)
    V = V * [1.0, 1.0, 0.9]  # not a sphere, so the rotation matters
    plain = evaluate_generic(
        _write_mesh(tmp_path / "e.ply", V, F), spheres["gt"], tmp_path / "a.json", n_samples=30_000
    )
    sim = _similarity(2.5, [0.4, 0.9, -0.2], [3.0, -1.0, 7.0])
    moved = _write_mesh(tmp_path / "moved.ply", sim.apply(V), F)
    unaligned = evaluate_generic(moved, spheres["gt"], tmp_path / "b.json", n_samples=30_000)
    aligned = evaluate_generic(moved, spheres["gt"], tmp_path / "c.json", n_samples=30_000, alignment=_inverse(sim))
    assert unaligned["overall"] > 1.0
    for key in ("accuracy", "completeness", "overall"):
        assert aligned[key] == pytest.approx(plain[key], rel=0.02)
    assert json.loads((tmp_path / "c.json").read_text())["alignment"]["scale"] == pytest.approx(0.4)


def test_generic_skips_degenerate_and_accepts_non_manifold_faces(spheres: dict[str, Path], tmp_path: Path) -> None:
    V, F = _sphere(1.01, subdivisions=4)
    extra_v = np.array([[0.0, 0.0, 1.01], [0.5, 0.0, 1.01], [0.0, 0.5, 1.01]])
    Vx = np.concatenate([V, extra_v])
    e = F[0]
    fins = np.array([[e[0], e[1], len(V)], [e[0], e[1], len(V) + 1], [e[0], e[1], len(V) + 2]])  # 5 faces on an edge
    degenerate = np.array([[0, 0, 1], [2, 2, 2]])
    mesh = _write_mesh(tmp_path / "messy.ply", Vx, np.concatenate([F, fins, degenerate]))
    res = evaluate_generic(mesh, spheres["gt"], tmp_path / "eval.json", n_samples=20_000)
    assert res["n_points"]["faces_nonzero_area"] == len(F) + 3
    assert res["completeness"] == pytest.approx(0.01, rel=0.1)


def test_generic_reads_obj(spheres: dict[str, Path], tmp_path: Path) -> None:
    mesh = _write_mesh(tmp_path / "pred.obj", *_sphere(1.01, subdivisions=4))
    res = evaluate_generic(mesh, spheres["gt"], tmp_path / "eval.json", n_samples=10_000)
    assert res["overall"] == pytest.approx(0.01, rel=0.1)


# ------------------------------------------------------------------------------------- bad input
def test_missing_mesh(spheres: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"nope\.ply: mesh file not found"):
        evaluate_generic(tmp_path / "nope.ply", spheres["gt"], tmp_path / "eval.json")


def test_missing_gt(spheres: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"gt_missing\.ply: ground truth file not found"):
        evaluate_generic(spheres["pred"], tmp_path / "gt_missing.ply", tmp_path / "eval.json")


@pytest.mark.parametrize("content", [b"", b"this is not a mesh\n" * 10, b"ply\nformat ascii 1.0\nelement vertex 3\n"])
def test_unreadable_mesh(spheres: dict[str, Path], tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken.ply"
    bad.write_bytes(content)
    with pytest.raises(StageError, match=r"broken\.ply"):
        evaluate_generic(bad, spheres["gt"], tmp_path / "eval.json")


def test_mesh_without_faces(spheres: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"gt_cloud\.ply: the mesh has .* vertices but no faces"):
        evaluate_generic(spheres["gt_cloud"], spheres["gt"], tmp_path / "eval.json")


def test_all_faces_degenerate(spheres: dict[str, Path], tmp_path: Path) -> None:
    V = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    mesh = _write_mesh(tmp_path / "flat.ply", V, np.array([[0, 1, 2], [1, 2, 3], [0, 0, 1]]))
    with pytest.raises(StageError, match=r"flat\.ply: all 3 faces have zero area"):
        evaluate_generic(mesh, spheres["gt"], tmp_path / "eval.json")


def test_unsupported_format(spheres: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "mesh.xyzw"
    bad.write_text("1 2 3\n")
    with pytest.raises(StageError, match="unsupported mesh format"):
        evaluate_generic(bad, spheres["gt"], tmp_path / "eval.json")


def test_cli_reports_errors_without_traceback(spheres: dict[str, Path], tmp_path: Path, capsys) -> None:
    pytest.importorskip("neus_stage.frames")  # the CLI's evaluate command imports it
    from neus_stage.cli import main

    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--mesh",
                str(spheres["pred"]),
                "--gt",
                str(spheres["gt"]),
                "--out",
                str(out),
                "--thresholds",
                "0.005,0.02",
            ]
        )
        == 0
    )
    assert [r["threshold"] for r in json.loads(out.read_text())["fscores"]] == [0.005, 0.02]
    assert main(["evaluate", "--mesh", str(tmp_path / "nope.ply"), "--gt", str(spheres["gt"]), "--out", str(out)]) == 2
    assert "nope.ply: mesh file not found" in capsys.readouterr().err
