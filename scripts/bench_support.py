"""Before/after the support plane (issue 17): one scene through visual-hull -> train -> mesh -> evaluate,
once with the support search off and the raw extent kept (the old behaviour), once with the defaults.

    scripts/bench_support.py render --scene pot --views 40 --size 400x300 --out EXP/pot_render
    scripts/bench_support.py run --dataset EXP/pot/dataset --gt EXP/pot_render/gt.ply --out EXP/pot --minutes 3
    scripts/bench_support.py run --dataset EXP/demo/dataset --sparse results/demo/sfm/undistorted/sparse \
        --gt resources/demo/gt.ply --reference-cameras resources/demo/cameras_sphere.npz --out EXP/demo --minutes 3
    scripts/bench_support.py figures --out EXP/pot --floor-z 0 --axis 0,0 --normal 0,1,0 --png docs/pot_section.png

``run`` writes EXP/<variant>/{bbox.json,hull.npz,neus/,mesh.ply,mesh_clean.ply,mesh.json,eval.json} for the
variants ``before`` and ``after``, and EXP/summary.json (area below the floor, Chamfer, F-score at 1%).
Every step is the package's own command (``python -m neus_stage``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from neus_stage.artifacts.box import read_bbox_record

VARIANTS = {"before": (["--support", "off"], ["--no-cut-at-support"]), "after": (["--support", "cut"], [])}


def stage(*args: str) -> None:
    cmd = [sys.executable, "-m", "neus_stage", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def render(a: argparse.Namespace) -> None:
    w, h = (int(v) for v in a.size.split("x"))
    stage("synth", "--out", a.out, "--scene", a.scene, "--views", str(a.views), "--width", str(w), "--height", str(h))
    stage(
        "dataset",
        "--out",
        str(Path(a.out) / "dataset"),
        "--masks",
        str(Path(a.out) / "masks"),
        "--reference-cameras",
        str(Path(a.out) / "cameras_sphere.npz"),
        "--photos",
        str(Path(a.out) / "photos"),
    )


def world_mesh(out: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A variant's mesh in the ground truth's frame (eval.json's alignment applied where there is one)."""
    import trimesh

    m = trimesh.load(out / name, process=False)
    V = np.asarray(m.vertices, dtype=np.float64)
    ev = out / "eval.json"
    if ev.is_file():
        al = json.loads(ev.read_text()).get("alignment")
        if al:
            M = np.asarray(al["matrix"])
            V = V @ M[:3, :3].T + M[:3, 3]
    return V, np.asarray(m.faces)


def below(V: np.ndarray, F: np.ndarray, floor_z: float, tol: float) -> dict:
    t = V[F]
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    z = t[:, :, 2].mean(1)
    low = z < floor_z - tol
    return {
        "area_below": float(area[low].sum()),
        "area_total": float(area.sum()),
        "depth_below": float(max(0.0, floor_z - V[:, 2].min())),
        "tolerance": tol,
    }


def run(a: argparse.Namespace) -> None:
    out = Path(a.out)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    for name, (hull_args, mesh_args) in VARIANTS.items():
        if name not in a.variants.split(","):
            continue
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        hull = [
            "visual-hull",
            "--dataset",
            a.dataset,
            "--bbox",
            str(d / "bbox.json"),
            "--hull",
            str(d / "hull.npz"),
            *hull_args,
        ]
        if a.sparse and name == "after":
            hull += ["--sparse", a.sparse]
        stage(*hull)
        if not (d / "neus" / "checkpoint.pt").is_file():
            stage(
                "train",
                "--dataset",
                a.dataset,
                "--hull",
                str(d / "hull.npz"),
                "--bbox",
                str(d / "bbox.json"),
                "--out",
                str(d / "neus"),
                "--preset",
                "cpu",
                "--set",
                f"max_minutes={a.minutes}",
                "--set",
                "steps=1000000",
                *sum((["--set", s] for s in a.set), []),
            )
        stage(
            "mesh",
            "--checkpoint",
            str(d / "neus" / "checkpoint.pt"),
            "--dataset",
            a.dataset,
            "--bbox",
            str(d / "bbox.json"),
            "--hull",
            str(d / "hull.npz"),
            "--out",
            str(d / "mesh.ply"),
            "--clean",
            str(d / "mesh_clean.ply"),
            "--resolution",
            str(a.resolution),
            "--dilation",
            str(a.dilation),
            *mesh_args,
        )
        if a.gt:
            ev = ["evaluate", "--mesh", str(d / "mesh_clean.ply"), "--gt", a.gt, "--out", str(d / "eval.json")]
            if a.reference_cameras:
                ev += ["--dataset", a.dataset, "--reference-cameras", a.reference_cameras, "--icp"]
            stage(*ev)
        rec: dict = {
            "bbox_support": read_bbox_record(d / "bbox.json")["support"].get("message"),
            "mesh_support": json.loads((d / "mesh.json").read_text()).get("support"),
        }
        if (d / "eval.json").is_file():
            e = json.loads((d / "eval.json").read_text())
            f1 = min(e["fscores"], key=lambda r: abs(r["threshold_pct_diag"] - 1.0))
            rec.update(chamfer_pct=e["chamfer_pct_diag"], fscore_1pct=f1["fscore"], eval_support=e.get("support"))
        if a.floor_z is not None:
            V, F = world_mesh(d, "mesh_clean.ply")
            voxel = json.loads((d / "mesh.json").read_text())["voxel_size_world"]
            rec["below_floor"] = below(V, F, a.floor_z, voxel)
        summary[name] = rec
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        json.dumps(
            {k: {kk: v.get(kk) for kk in ("chamfer_pct", "fscore_1pct", "below_floor")} for k, v in summary.items()},
            indent=1,
        )
    )


def figures(a: argparse.Namespace) -> None:
    """A section through the object (the plane through ``axis`` (x,y) with ``normal``) of the ground truth
    and of the clean mesh before and after."""
    import trimesh
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    out = Path(a.out)
    n = np.asarray([float(v) for v in a.normal.split(",")])
    origin = np.array([*(float(v) for v in a.axis.split(",")), 0.0])
    u = np.cross([0.0, 0.0, 1.0], n)
    u /= np.linalg.norm(u)
    fig = Figure(figsize=(4.2 * 2, 4.6), dpi=110)
    for k, name in enumerate(VARIANTS):
        ax = fig.add_subplot(1, 2, k + 1)

        def draw(mesh, ax=ax, **style) -> None:  # raw segments: Path3D.discrete drops open and merged pieces
            segs = trimesh.intersections.mesh_plane(mesh, plane_normal=n, plane_origin=origin)
            lines = np.stack([(segs - origin) @ u, segs[..., 2]], -1)
            ax.add_collection(LineCollection(lines, **style))
            ax.plot([], [], color=style["colors"], label=style.pop("label"))

        if a.gt:
            draw(trimesh.load(a.gt, process=False), colors="0.6", linewidths=2.5, label="true surface")
        V, F = world_mesh(out / name, "mesh_clean.ply")
        draw(
            trimesh.Trimesh(V, F, process=False),
            colors="tab:red" if name == "before" else "tab:blue",
            linewidths=1.0,
            label="mesh_clean.ply",
        )
        ax.autoscale()
        if a.floor_z is not None:
            ax.axhline(a.floor_z, color="tab:orange", lw=0.8, ls="--", label=a.floor_label)
        s = json.loads((out / "summary.json").read_text()).get(name, {})
        title = {"before": "before (support off, raw extent)", "after": "after (support plane / visibility cull)"}
        extra = ""
        if "chamfer_pct" in s:
            extra = f"\nChamfer {s['chamfer_pct']['overall']:.2f}%, F@1% {s['fscore_1pct']:.2f}"
        if "below_floor" in s:
            extra += f", area below {s['below_floor']['area_below']:.3g}"
        ax.set_title(title[name] + extra, fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        h, lab = ax.get_legend_handles_labels()
        ax.legend(dict(zip(lab, h)).values(), dict(zip(lab, h)).keys(), fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(a.png)
    print(a.png)


def side(a: argparse.Namespace) -> None:
    """The support plane and the mesh from the side: the hull's surface voxels cut and uncut, and the clean
    mesh, in a frame whose z is the plane's normal (elevation 0, two azimuths)."""
    import io

    from matplotlib.figure import Figure
    from PIL import Image

    from neus_stage.artifacts.box import read_hull_file
    from neus_stage.artifacts.meshes import read_mesh_decimated
    from neus_stage.report import ViewFrame, hull_surface_points, render_mesh_views

    d = Path(a.out) / a.variant
    sup = read_bbox_record(d / "bbox.json")["support"]
    if sup.get("method") != "plane":
        raise SystemExit(f"{d / 'bbox.json'}: no support plane ({sup.get('reason')}: {sup.get('message')})")
    pw = sup["plane"]["world"]
    n, off = np.asarray(pw["normal"]), float(pw["offset"])
    V, F, _ = read_mesh_decimated(d / a.mesh, 60000)
    c = V.mean(0)
    x = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    foot = c - (n @ c + off) * n  # the mesh centre dropped onto the plane: the plane is z = 0 in the figure
    frame = ViewFrame(np.stack([x, np.cross(n, x), n]), foot)
    png = render_mesh_views(V, F, frame=frame, views=[(0.0, 0.0), (0.0, 90.0), (25.0, 45.0)], panel_px=320)
    fig = Figure(figsize=(13, 4.4), dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    hulls = {"before": Path(a.out) / "before" / "hull.npz", a.variant: d / "hull.npz"}
    for name, path in hulls.items():
        if path.is_file():
            q = frame.apply(hull_surface_points(path, 8000))
            ax.scatter(
                q[:, 0],
                q[:, 2],
                s=0.5,
                label=f"visual hull ({name})",
                c="tab:red" if name == "before" else "tab:blue",
                alpha=0.5,
            )
    hull = read_hull_file(d / "hull.npz")
    if hull.support_points is not None and hull.support_inliers is not None:
        sp = frame.apply(hull.support_points[hull.support_inliers])
        sp = sp[np.abs(sp[:, 1]) < 0.2 * np.ptp(sp[:, 0]) + 1e-9]
        ax.scatter(sp[:, 0], sp[:, 2], s=1, c="tab:orange", label="plane inliers (a slab)")
    ax.axhline(0.0, color="tab:orange", lw=0.8)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, markerscale=6)
    src = sup.get("source", {})
    ax.set_title(
        f"{a.title}: support plane through {pw['inliers']} of {src.get('points')} points "
        f"({pw['inlier_share']:.0%})\ntriangulated with the reference cameras, tilted "
        f"{pw['tilt_deg']:.1f} deg from the cameras' up",
        fontsize=8,
    )
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.imshow(Image.open(io.BytesIO(png)))
    ax2.axis("off")
    ax2.set_title(f"{a.mesh} from the side (the plane's normal up)", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.png)
    print(a.png)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("--scene", default="pot")
    r.add_argument("--views", type=int, default=40)
    r.add_argument("--size", default="400x300")
    r.add_argument("--out", required=True)
    r.set_defaults(func=render)
    q = sub.add_parser("run")
    q.add_argument("--dataset", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--sparse", default=None)
    q.add_argument("--gt", default=None)
    q.add_argument("--reference-cameras", default=None)
    q.add_argument("--minutes", type=float, default=3.0)
    q.add_argument("--resolution", type=int, default=256)
    q.add_argument("--dilation", type=int, default=4)
    q.add_argument("--floor-z", type=float, default=None)
    q.add_argument("--set", action="append", default=[], help="extra training overrides KEY=VALUE")
    q.add_argument("--variants", default="before,after")
    q.set_defaults(func=run)
    sd = sub.add_parser("side")
    sd.add_argument("--out", required=True)
    sd.add_argument("--variant", default="after")
    sd.add_argument("--png", required=True)
    sd.add_argument("--title", default="")
    sd.add_argument("--mesh", default="mesh_clean.ply")
    sd.set_defaults(func=side)
    f = sub.add_parser("figures")
    f.add_argument("--out", required=True)
    f.add_argument("--gt", default=None)
    f.add_argument("--axis", default="0,0")
    f.add_argument("--normal", default="0,1,0")
    f.add_argument("--floor-z", type=float, default=None)
    f.add_argument("--floor-label", default="floor")
    f.add_argument("--png", required=True)
    f.set_defaults(func=figures)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
