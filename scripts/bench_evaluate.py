#!/usr/bin/env python
"""Timings (and peak memory) of neus_stage.evaluate: the DTU fixture meshes and a full-size synthetic case.

    python scripts/bench_evaluate.py                 # fixture meshes + full size (2M faces vs 5M GT points)
    python scripts/bench_evaluate.py --skip-full     # fixture meshes only
    python scripts/bench_evaluate.py --faces 500000 --gt-points 1000000   # a smaller "full size"

Every case runs in its own subprocess so that its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "data" / "dtu_eval_fixture"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ------------------------------------------------------------------------------------- child cases
def _case(kind: str, args: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from neus_stage.evaluate import evaluate_dtu, evaluate_generic

    t = time.perf_counter()
    if kind == "dtu":
        mesh, root, scan, out = args
        res = evaluate_dtu(Path(mesh), Path(root), int(scan), Path(out))
    else:
        mesh, gt, out = args
        res = evaluate_generic(Path(mesh), Path(gt), Path(out))
    res["wall_s"] = time.perf_counter() - t
    res["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(res))


def _run_case(kind: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--case", kind, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"case {kind} {args} failed")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


# ------------------------------------------------------------------------------------- synthetic data
def _bumpy_sphere(n_faces: int, radius: float, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude-longitude grid of a bumpy sphere with about n_faces triangles (two tiny holes at the poles)."""
    n = int(np.sqrt(n_faces / 2))
    th = (np.arange(n) + 0.5) / n * np.pi
    ph = np.arange(n) / n * 2 * np.pi
    T, P = np.meshgrid(th, ph, indexing="ij")
    r = radius * (1 + 0.03 * np.sin(8 * T) * np.sin(8 * P))
    V = np.stack([r * np.sin(T) * np.cos(P), r * np.sin(T) * np.sin(P), r * np.cos(T)], -1).reshape(-1, 3) + center
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n), indexing="ij")
    a, b = i * n + j, i * n + (j + 1) % n
    c, d = a + n, b + n
    F = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    return V, F


def _make_full_case(tmp: Path, n_faces: int, n_gt: int) -> tuple[Path, Path, Path]:
    import open3d as o3d
    from scipy.io import savemat

    center = np.array([0.0, 0.0, 600.0])
    V, F = _bumpy_sphere(n_faces, 100.0, center)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(V), o3d.utility.Vector3iVector(F.astype(np.int32)))
    mesh_path = tmp / "mesh_full.ply"
    o3d.io.write_triangle_mesh(str(mesh_path), mesh)
    # GT: the same surface, as a scanner would see it: area-uniform samples with 0.3 mm noise, a
    # 0.3 mm (rms) constant offset and a 10% cap missing
    sys.path.insert(0, str(ROOT))
    from neus_stage.geometry.distances import sample_surface

    rng = np.random.default_rng(0)
    tri = V[F]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    del tri
    gt = sample_surface(V, F, areas, int(n_gt / 0.9) + 1, rng)
    gt = gt[gt[:, 0] < center[0] + 80.0][:n_gt] + rng.normal(scale=0.3, size=(1, 3))
    gt += rng.normal(scale=0.3, size=gt.shape)
    root = tmp / "dtu"
    (root / "ObsMask").mkdir(parents=True)
    (root / "Points" / "stl").mkdir(parents=True)
    gt_path = root / "Points" / "stl" / "stl001_total.ply"
    o3d.io.write_point_cloud(str(gt_path), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(gt)))
    BB = np.array([[-150.0, -150.0, 450.0], [150.0, 150.0, 750.0]])
    savemat(
        root / "ObsMask" / "ObsMask1_10.mat",
        {"ObsMask": np.ones((301, 301, 301), np.uint8), "BB": BB, "Res": np.array([[1.0]])},
    )
    savemat(root / "ObsMask" / "Plane1.mat", {"P": np.array([[0.0], [0.0], [-1.0], [690.0]])})
    return mesh_path, gt_path, root


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--skip-full", action="store_true", help="only the fixture meshes")
    ap.add_argument("--faces", type=int, default=2_000_000, help="faces of the full-size synthetic mesh")
    ap.add_argument("--gt-points", type=int, default=5_000_000, help="GT points of the full-size case")
    a = ap.parse_args()
    if a.case:
        _case(a.case[0], a.case[1:])
        return

    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if FIXTURE.is_dir():
            import csv

            with open(FIXTURE / "expected.csv") as fh:
                expected = {r["mesh"]: r for r in csv.DictReader(fh)}
            for name, exp in expected.items():
                r = _run_case("dtu", FIXTURE / "meshes" / f"{name}.ply", FIXTURE, exp["scan"], tmp / f"{name}.json")
                rows.append((f"DTU fixture {name}", r, exp))
        else:
            print(f"(fixture {FIXTURE} not present: skipped)")
        if not a.skip_full:
            t = time.perf_counter()
            mesh_path, gt_path, root = _make_full_case(tmp, a.faces, a.gt_points)
            print(f"(made the full-size case in {time.perf_counter() - t:.1f} s)")
            rows.append(
                (
                    f"DTU {a.faces / 1e6:g}M faces vs {a.gt_points / 1e6:g}M GT",
                    _run_case("dtu", mesh_path, root, 1, tmp / "full_dtu.json"),
                    None,
                )
            )
            rows.append(
                (
                    f"generic {a.faces / 1e6:g}M faces vs {a.gt_points / 1e6:g}M GT cloud",
                    _run_case("generic", mesh_path, gt_path, tmp / "full_generic.json"),
                    None,
                )
            )

    print()
    hdr = (
        f"{'case':<44} {'acc':>8} {'comp':>8} {'overall':>8} {'expected':>8} {'diff%':>6} {'wall s':>7} "
        f"{'peak MB':>8}  stages (s)"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, r, exp in rows:
        e = float(exp["overall_mm"]) if exp else float("nan")
        diff = (
            100 * max(abs(r[k] / float(exp[k + "_mm"]) - 1) for k in ("accuracy", "completeness", "overall"))
            if exp
            else float("nan")
        )
        stages = " ".join(f"{k}={v:.2f}" for k, v in r["timings_s"].items() if k != "total")
        print(
            f"{name:<44} {r['accuracy']:8.4f} {r['completeness']:8.4f} {r['overall']:8.4f} {e:8.4f} {diff:6.3f} "
            f"{r['wall_s']:7.2f} {r['peak_rss_mb']:8.0f}  {stages}"
        )
        if "n_points" in r and not exp:
            print(f"{'':<44} n_points: {r['n_points']}")


if __name__ == "__main__":
    main()
