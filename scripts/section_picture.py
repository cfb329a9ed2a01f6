"""A section through meshes and the ground truth along a plane of a rendered scene (docs/demo_cup_section.png).

    .venv/bin/python scripts/section_picture.py --scene mug --gt resources/demo/gt.ply \\
        --mesh results/demo/mesh.ply "make demo" results/demo/eval.json --out docs/demo_cup_section.png

Each ``--mesh PATH LABEL [EVAL_JSON]`` is one panel: the mesh's section in red over the ground truth's in
black. With EVAL_JSON (an evaluate rule's eval.json) the mesh is first mapped into the ground truth's frame
by the alignment recorded there (SfM reconstructions live in their own frame). The plane is the scene's
(``--scene``): for the mug, through the cup's axis and the handle, in the mug's own frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from neus_stage.synth.scenes import mug_placement as _mug_placement  # noqa: E402
from neus_stage.synth.sdf import rot_z as _rot_z  # noqa: E402


def _frames() -> dict[str, tuple[np.ndarray, np.ndarray, int, tuple[int, int]]]:
    """Per scene: rotation and offset of its local frame (x_world = R x_local + t), the local axis normal
    to the section plane (through the local origin) and the two axes drawn."""
    rot, off = _mug_placement()
    eye, zero = np.eye(3), np.zeros(3)
    return {
        "mug": (rot, off, 1, (0, 2)),  # through the cup's axis and the handle
        "bowl": (eye, zero, 1, (0, 2)),
        "pot": (eye, zero, 1, (0, 2)),
        "slot": (_rot_z(20.0), zero, 0, (1, 2)),  # across the slot
    }


def section_segments(verts: np.ndarray, faces: np.ndarray, axis: int) -> np.ndarray:
    """Segments (M,2,3) where the triangles cross the plane ``verts[:, axis] == 0``."""
    d = verts[faces][:, :, axis]  # (F,3) signed distances of the corners
    s = np.sign(d)
    cross = (s.min(1) < 0) & (s.max(1) > 0)
    tri, dist = verts[faces[cross]], d[cross]
    segs = []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        da, db = dist[:, a], dist[:, b]
        hit = (da < 0) != (db < 0)
        t = np.where(hit, da / np.where(hit, da - db, 1.0), 0.0)
        segs.append((tri[:, a] + t[:, None] * (tri[:, b] - tri[:, a]), hit))
    out = []
    for i in range(len(tri)):
        pts = [p[i] for p, h in segs if h[i]]
        if len(pts) == 2:
            out.append(pts)
    return np.array(out).reshape(-1, 2, 3)


def load_local(path: Path, rot: np.ndarray, off: np.ndarray, eval_json: Path | None) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.load(path, process=False, force="mesh")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if eval_json is not None:
        m = np.array(json.loads(Path(eval_json).read_text())["alignment"]["matrix"])
        v = v @ m[:3, :3].T + m[:3, 3]
    return (v - off) @ rot, np.asarray(mesh.faces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default="mug", choices=sorted(_frames()))
    ap.add_argument("--gt", type=Path, required=True)
    ap.add_argument("--mesh", nargs="+", action="append", required=True, metavar="PATH LABEL [EVAL_JSON]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    rot, off, axis, (u, w) = _frames()[a.scene]
    gv, gf = load_local(a.gt, rot, off, None)
    gt = section_segments(gv, gf, axis)
    fig, axes = plt.subplots(1, len(a.mesh), figsize=(4.2 * len(a.mesh), 4.2), squeeze=False)
    for ax, spec in zip(axes[0], a.mesh):
        path, label = Path(spec[0]), spec[1] if len(spec) > 1 else Path(spec[0]).parent.name
        v, f = load_local(path, rot, off, Path(spec[2]) if len(spec) > 2 else None)
        rec = section_segments(v, f, axis)
        ax.add_collection(LineCollection(gt[:, :, [u, w]], colors="k", linewidths=0.8))
        ax.add_collection(LineCollection(rec[:, :, [u, w]], colors="r", linewidths=0.8))
        both = np.concatenate([gt, rec]).reshape(-1, 3) if len(rec) else gt.reshape(-1, 3)
        lo, hi = both.min(0), both.max(0)
        pad = 0.05 * (hi - lo).max()
        ax.set_xlim(lo[u] - pad, hi[u] + pad)
        ax.set_ylim(lo[w] - pad, hi[w] + pad)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("black: true section, red: reconstruction", fontsize=8)
    if a.title:
        fig.suptitle(a.title, fontsize=10)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=100)
    print(a.out)


if __name__ == "__main__":
    main()
