"""Mesh extraction on analytic SDFs, cleaning, mask culling, and the mesh stage with a stand-in trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_fields import install_fake_fields
from PIL import Image

from neus_stage.artifacts.dataset import write_cameras_sphere
from neus_stage.errors import StageError
from neus_stage.geometry.cameras import scale_mat_from_sphere
from neus_stage.geometry.extraction import EmptySurfaceError, extract_mesh, grid_layout, sample_sdf_grid
from neus_stage.geometry.mesh_tools import clean_mesh, cull_by_masks, edge_stats, signed_volume
from neus_stage.mesh import mesh_from_checkpoint

CENTER = torch.tensor([0.05, -0.03, 0.02])
LO, HI = [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]


def sphere(radius: float = 0.5, center: torch.Tensor = CENTER):
    return lambda p: torch.linalg.norm(p - center.to(p), dim=-1) - radius


def torus(R: float = 0.5, r: float = 0.2):
    def f(p):
        q = torch.stack([torch.linalg.norm(p[:, :2], dim=-1) - R, p[:, 2]], dim=-1)
        return torch.linalg.norm(q, dim=-1) - r

    return f


def box_with_hole(half=(0.6, 0.5, 0.4), hole=0.2):
    h = torch.tensor(half)

    def f(p):
        q = p.abs() - h.to(p)
        box = torch.linalg.norm(q.clamp(min=0), dim=-1) + q.max(dim=-1).values.clamp(max=0)
        cyl = torch.linalg.norm(p[:, :2], dim=-1) - hole  # a hole through the box along z
        return torch.maximum(box, -cyl)

    return f


def euler(verts, faces) -> int:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    e = np.unique(e, axis=0)
    return len(verts) - len(e) + len(faces)


def sdf_np(func, v) -> np.ndarray:
    return func(torch.as_tensor(v, dtype=torch.float32)).numpy()


# ------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    ("name", "func", "genus", "volume"),
    [
        ("sphere", sphere(), 0, 4 / 3 * np.pi * 0.5**3),
        ("torus", torus(), 1, 2 * np.pi**2 * 0.5 * 0.2**2),
        ("box_with_hole", box_with_hole(), 1, 1.2 * 1.0 * 0.8 - np.pi * 0.2**2 * 0.8),
    ],
)
def test_analytic_surfaces(name, func, genus, volume):
    res = 64
    verts, faces = extract_mesh(func, LO, HI, res, block=32)
    voxel = 2.0 / (res - 1)
    assert verts.dtype == np.float64 and faces.dtype == np.int64
    assert np.abs(sdf_np(func, verts)).max() < voxel, name  # on the analytic surface
    assert edge_stats(faces)["watertight"], name
    assert euler(verts, faces) == 2 - 2 * genus, name
    vol = signed_volume(verts, faces)
    assert vol > 0, f"{name}: triangles wound inward"
    assert vol == pytest.approx(volume, rel=0.03), name


def test_normals_point_along_the_gradient():
    func = sphere()
    verts, faces = extract_mesh(func, LO, HI, 48)
    t = verts[faces]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    c = torch.tensor(t.mean(axis=1), dtype=torch.float32, requires_grad=True)
    (grad,) = torch.autograd.grad(func(c).sum(), c)
    assert (np.einsum("ij,ij->i", n, grad.numpy()) > 0).mean() > 0.999


def test_block_size_does_not_change_the_mesh():
    a = extract_mesh(torus(), LO, HI, 72, block=16)
    b = extract_mesh(torus(), LO, HI, 72, block=64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def occupancy_of(func, res: int, lo=LO, hi=HI) -> np.ndarray:
    """Solid occupancy: voxels whose centre is within half a voxel diagonal of the inside."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    vox = (hi - lo) / res
    axes = [lo[k] + (np.arange(res) + 0.5) * vox[k] for k in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return (sdf_np(func, pts) < 0.5 * np.linalg.norm(vox)).reshape(res, res, res)


def test_occupancy_skipping_gives_the_same_mesh():
    func = sphere(0.3)
    calls = []

    def counted(p):
        calls.append(len(p))
        return func(p)

    full = extract_mesh(func, LO, HI, 96, block=16)
    occ = occupancy_of(func, 16)
    _, _, _, stats = sample_sdf_grid(counted, LO, HI, 96, block=16, occupancy=occ, occupancy_bounds=(LO, HI))
    assert stats["blocks_skipped"] > stats["blocks"] / 2
    assert sum(calls) == stats["samples_queried"] < 96**3 / 2
    skipped = extract_mesh(func, LO, HI, 96, block=16, occupancy=occ, occupancy_bounds=(LO, HI))
    assert np.array_equal(full[0], skipped[0]) and np.array_equal(full[1], skipped[1])


@pytest.mark.parametrize("res, coarse", [(97, 4), (90, 4), (130, 8), (61, 3)])  # divisible and not
def test_coarse_to_fine_sampling_gives_the_same_mesh_for_a_fraction_of_the_queries(res, coarse):
    func = torus()
    calls = []

    def counted(p):
        calls.append(len(p))
        return func(p)

    full = extract_mesh(func, LO, HI, res, block=32)
    grid, _, _, stats = sample_sdf_grid(counted, LO, HI, res, block=32, coarse=coarse)
    assert sum(calls) == stats["samples_queried"] < 0.6 * res**3
    exact, _, _, _ = sample_sdf_grid(func, LO, HI, res, block=32)
    assert ((grid > 0) == (exact > 0)).all()  # interpolated far from the surface, never with the wrong sign
    near = np.abs(exact) < 0.05
    assert np.array_equal(grid[near], exact[near])
    fast = extract_mesh(func, LO, HI, res, block=32, coarse=coarse)
    assert np.array_equal(full[0], fast[0]) and np.array_equal(full[1], fast[1])
    # with the hull's occupancy too
    occ = occupancy_of(func, 16)
    both = extract_mesh(func, LO, HI, res, block=32, coarse=coarse, occupancy=occ, occupancy_bounds=(LO, HI))
    assert np.array_equal(full[0], both[0]) and np.array_equal(full[1], both[1])


def test_non_cubic_box_keeps_the_spacing():
    shape, origin, spacing = grid_layout([-0.5, -0.25, -0.1], [0.5, 0.25, 0.1], 101)
    assert shape == (101, 51, 21) and spacing == pytest.approx(0.01)
    assert np.allclose(origin, [-0.5, -0.25, -0.1])
    verts, faces = extract_mesh(sphere(0.08, torch.zeros(3)), [-0.5, -0.25, -0.1], [0.5, 0.25, 0.1], 101)
    assert edge_stats(faces)["watertight"] and signed_volume(verts, faces) > 0


def test_empty_surface_and_nan_are_errors():
    with pytest.raises(EmptySurfaceError, match="surface is empty"):
        extract_mesh(lambda p: torch.linalg.norm(p, dim=-1) + 0.1, LO, HI, 16)
    with pytest.raises(EmptySurfaceError, match="negative everywhere"):
        extract_mesh(lambda p: torch.linalg.norm(p, dim=-1) - 5, LO, HI, 16)
    with pytest.raises(StageError, match="non-finite"):
        extract_mesh(lambda p: torch.full((len(p),), float("nan")), LO, HI, 16)


# --------------------------------------------------------------------------------------- cleaning
def test_clean_removes_a_floater_duplicates_and_degenerate_faces():
    v1, f1 = extract_mesh(sphere(0.5), LO, HI, 48)
    v2, f2 = extract_mesh(sphere(0.1, torch.tensor([0.8, 0.8, 0.8])), LO, HI, 48)
    assert len(f2) < 0.05 * len(f1)
    mid = (v1[f1[0, 0]] + v1[f1[0, 1]]) / 2
    verts = np.concatenate([v1, v2, v1[f1[1]], [mid]])  # a copy of one face's vertices, an edge midpoint
    n = len(v1) + len(v2)
    extra = [f1[2], [n, n + 1, n + 2], [f1[0, 0], f1[0, 1], n + 3], [0, 0, 1]]  # duplicates, zero-area faces
    faces = np.concatenate([f1, f2 + len(v1), extra])
    cv, cf = clean_mesh(verts, faces)
    assert len(cf) == len(f1) and len(cv) == len(v1)
    assert edge_stats(cf)["watertight"]
    assert np.linalg.norm(cv - CENTER.numpy(), axis=1).max() < 0.6
    # min_component=0 keeps every part
    assert len(clean_mesh(verts, faces, min_component=0)[1]) == len(f1) + len(f2)


# ---------------------------------------------------------------------------------------- culling
def look_at(eye: np.ndarray, target: np.ndarray, f: float = 120.0, size: int = 128) -> np.ndarray:
    """world_mat (4x4, K[R|t]) of a pinhole camera at ``eye`` looking at ``target`` (OpenCV axes)."""
    z = (target - eye) / np.linalg.norm(target - eye)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]])
    wm = np.eye(4)
    wm[:3, :3] = K @ R
    wm[:3, 3] = K @ (-R @ eye)
    return wm


def silhouette(world_mat: np.ndarray, center: np.ndarray, radius: float, size: int = 128) -> np.ndarray:
    """Mask of the pixels whose ray meets the sphere (center, radius)."""
    M = world_mat[:3, :3]
    eye = -np.linalg.solve(M, world_mat[:3, 3])
    v, u = np.mgrid[0:size, 0:size]
    d = np.linalg.solve(M, np.stack([u.ravel(), v.ravel(), np.ones(u.size)])).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = center - eye
    dist = np.linalg.norm(w - (d @ w)[:, None] * d, axis=1)
    return (dist < radius).reshape(size, size)


def camera_ring(center: np.ndarray, distance: float, n: int = 6) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    eyes = center + distance * np.stack([np.cos(angles), np.sin(angles), 0.4 * np.ones(n)], axis=1)
    return np.stack([look_at(e, center) for e in eyes])


def test_cull_removes_what_projects_onto_background():
    center, radius = np.array([1.0, 2.0, 3.0]), 1.0  # a world frame: scale 2, offset (1, 2, 3)
    world_mats = camera_ring(center, 5.0)
    masks = [silhouette(wm, center, radius) for wm in world_mats]
    v1, f1 = extract_mesh(sphere(0.5, torch.zeros(3)), LO, HI, 40)
    v2, f2 = extract_mesh(sphere(0.1, torch.tensor([0.0, 0.0, 0.75])), LO, HI, 40)  # above the object
    verts = np.concatenate([v1, v2]) * 2 + center
    faces = np.concatenate([f1, f2 + len(v1)])
    cv, cf = cull_by_masks(verts, faces, world_mats, masks, dilation=2)
    assert len(cf) == len(f1) and len(cv) == len(v1)
    assert np.abs(np.linalg.norm(cv - center, axis=1) - radius).max() < 0.05
    # a point just outside the silhouette survives a wide dilation only; a point outside every image stays
    near = center + np.array([0.0, 0.0, radius * 1.12])
    far = center + np.array([0.0, 0.0, 50.0])
    pts, tri = np.stack([near, far, far + 0.1]), np.array([[0, 1, 2]])
    assert len(cull_by_masks(pts, tri, world_mats, masks, dilation=0)[0]) == 0
    assert len(cull_by_masks(pts, tri, world_mats, masks, dilation=12)[0]) == 3


# ------------------------------------------------------------------------------- the mesh stage
FLOATER = (torch.tensor([0.0, 0.0, 0.95]), 0.08)


def _fake_trainer(monkeypatch, with_colors: bool = True) -> None:
    """A stand-in for neus_stage.train.checkpoint: the 'checkpoint' holds the radius of a sphere, plus a
    small floater sphere that lies outside every mask."""

    def load_sdf_function(checkpoint, device):
        r = float(torch.load(checkpoint)["radius"])
        return lambda p: torch.minimum(sphere(r, torch.zeros(3))(p), sphere(FLOATER[1], FLOATER[0])(p))

    def load_color_function(checkpoint, device):
        return lambda p, n: 0.5 * (n + 1)

    install_fake_fields(monkeypatch, load_sdf_function, load_color_function if with_colors else None)


def _fake_scene(tmp_path: Path, radius: float = 0.5) -> dict:
    center, scale = np.array([1.0, 2.0, 3.0]), 2.0
    dataset = tmp_path / "dataset"
    world_mats = camera_ring(center, 6.0, n=5)
    write_cameras_sphere(dataset / "cameras_sphere.npz", world_mats, scale_mat_from_sphere(center, scale))
    (dataset / "mask").mkdir()
    for i, wm in enumerate(world_mats):
        mask = silhouette(wm, center, radius * scale).astype(np.uint8) * 255
        Image.fromarray(mask).save(dataset / "mask" / f"{i:03d}.png")
    bbox = tmp_path / "bbox.json"
    bbox.write_text(
        json.dumps(
            {
                "normalized": {"min": [-0.6, -0.6, -0.6], "max": [0.6, 0.6, 1.2]},
                "world": {"min": [0, 0, 0], "max": [1, 1, 1]},
            }
        )
    )
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"radius": radius}, ckpt)
    return {"dataset": dataset, "bbox": bbox, "checkpoint": ckpt, "center": center, "scale": scale}


def test_mesh_of_a_scene_without_masks_is_cleaned_without_culling(tmp_path, monkeypatch):
    import shutil

    import trimesh

    _fake_trainer(monkeypatch)
    s = _fake_scene(tmp_path)
    shutil.rmtree(s["dataset"] / "mask")  # a NeuS scene trained with use_mask=false
    out, clean = tmp_path / "mesh.ply", tmp_path / "mesh_clean.ply"
    meta = mesh_from_checkpoint(
        s["checkpoint"], s["dataset"], s["bbox"], out, clean_path=clean, resolution=64, block=16, device="cpu"
    )
    assert meta["mask_culled"] is False
    cleaned = trimesh.load(clean, process=False)
    r = np.linalg.norm(cleaned.vertices - s["center"], axis=1)
    assert np.abs(r - 1.0).max() < 0.03  # the small floater went with the small parts, the object stayed


def test_mesh_from_checkpoint_writes_world_meshes(tmp_path, monkeypatch):
    import trimesh

    _fake_trainer(monkeypatch)
    s = _fake_scene(tmp_path)
    # a hull over the object only: the floater's blocks are skipped, so it is absent from the raw mesh too
    hull = tmp_path / "hull.npz"
    lo, hi = np.array([-0.6, -0.6, -0.6]), np.array([0.6, 0.6, 1.2])
    occ = occupancy_of(sphere(0.5, torch.zeros(3)), 16, lo, hi)
    np.savez(hull, occupancy=occ, bounds_min=lo, bounds_max=hi)
    out, clean = tmp_path / "mesh.ply", tmp_path / "mesh_clean.ply"
    meta = mesh_from_checkpoint(
        s["checkpoint"],
        s["dataset"],
        s["bbox"],
        out,
        clean_path=clean,
        resolution=64,
        block=16,
        min_component=0,
        device="cpu",
    )  # culling alone
    raw = trimesh.load(out, process=False)
    r = np.linalg.norm(raw.vertices - s["center"], axis=1)
    assert np.abs(r[r < 1.2] - 1.0).max() < 0.03  # the object, radius 0.5 * scale 2, in world units
    assert (r > 1.2).any()  # the floater is in the raw mesh
    assert raw.visual.vertex_colors.shape == (len(raw.vertices), 4)
    cleaned = trimesh.load(clean, process=False)
    rc = np.linalg.norm(cleaned.vertices - s["center"], axis=1)
    assert rc.max() < 1.03 and cleaned.is_watertight and cleaned.volume > 0
    saved = json.loads((tmp_path / "mesh.json").read_text())
    assert saved == json.loads(json.dumps(meta))
    assert saved["resolution"] == 64 and saved["dilation"] == 12 and saved["colors"] and saved["mask_culled"]
    assert saved["mesh"]["faces"] == len(raw.faces) and saved["mesh_clean"]["faces"] == len(cleaned.faces)
    assert saved["voxel_size_world"] == pytest.approx(2 * saved["voxel_size_normalized"])
    assert {"sdf_grid", "marching_cubes", "cull", "clean", "total"} <= set(saved["timings_s"])

    meta_hull = mesh_from_checkpoint(
        s["checkpoint"],
        s["dataset"],
        s["bbox"],
        tmp_path / "m2.ply",
        hull_path=hull,
        resolution=64,
        block=8,
        device="cpu",
    )
    assert meta_hull["grid_blocks_skipped"] > 0 and meta_hull["mesh"]["watertight"]
    r_hull = np.linalg.norm(trimesh.load(tmp_path / "m2.ply", process=False).vertices - s["center"], axis=1)
    assert r_hull.max() < 1.03  # the floater's blocks lie outside the hull: never queried


def test_mesh_stage_errors_name_the_file(tmp_path, monkeypatch):
    from neus_stage.cli import main

    _fake_trainer(monkeypatch, with_colors=False)
    s = _fake_scene(tmp_path)
    args = [
        "mesh",
        "--checkpoint",
        str(s["checkpoint"]),
        "--dataset",
        str(s["dataset"]),
        "--bbox",
        str(s["bbox"]),
        "--out",
        str(tmp_path / "mesh.ply"),
        "--resolution",
        "24",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert json.loads((tmp_path / "mesh.json").read_text())["colors"] is False
    with pytest.raises(StageError, match="checkpoint.*not found"):
        mesh_from_checkpoint(tmp_path / "nope.pt", s["dataset"], s["bbox"], tmp_path / "x.ply")
    with pytest.raises(StageError, match="missing.json"):
        mesh_from_checkpoint(s["checkpoint"], s["dataset"], tmp_path / "missing.json", tmp_path / "x.ply")
    s["checkpoint"].write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match=r"checkpoint\.pt: cannot load"):
        mesh_from_checkpoint(s["checkpoint"], s["dataset"], s["bbox"], tmp_path / "x.ply")
    torch.save({"radius": 5.0}, s["checkpoint"])  # the box lies inside the 'object'
    with pytest.raises(EmptySurfaceError, match=r"checkpoint\.pt.*surface is empty"):
        mesh_from_checkpoint(s["checkpoint"], s["dataset"], s["bbox"], tmp_path / "x.ply", resolution=16)
    assert main([*args[:-4], "--resolution", "16"]) == 2


def test_mesh_files_are_written_in_the_format_their_extension_names(tmp_path, monkeypatch, run_cli):
    """`--out x.obj` writes OBJ (it used to write PLY bytes into x.obj); an extension the stage cannot write
    is refused before any work, naming the file and the formats."""
    import trimesh

    _fake_trainer(monkeypatch)
    s = _fake_scene(tmp_path)
    meta = mesh_from_checkpoint(
        s["checkpoint"],
        s["dataset"],
        s["bbox"],
        tmp_path / "m.obj",
        clean_path=tmp_path / "c.obj",
        resolution=32,
        block=16,
        device="cpu",
    )
    head = (tmp_path / "m.obj").read_bytes()[:200]
    assert not head.startswith(b"ply") and b"\nv " in b"\n" + head
    raw = trimesh.load(tmp_path / "m.obj", process=False)
    assert len(raw.faces) == meta["mesh"]["faces"] and json.loads((tmp_path / "m.json").read_text())["mesh"]
    clean = trimesh.load(tmp_path / "c.obj", process=False)
    assert len(clean.faces) == meta["mesh_clean"]["faces"]
    with pytest.raises(StageError, match=r"x\.stl.*\.ply, \.obj"):
        mesh_from_checkpoint(s["checkpoint"], s["dataset"], s["bbox"], tmp_path / "x.stl")
    args = [
        "mesh",
        "--checkpoint",
        str(s["checkpoint"]),
        "--dataset",
        str(s["dataset"]),
        "--bbox",
        str(s["bbox"]),
        "--out",
        str(tmp_path / "y.ply"),
        "--clean",
        str(tmp_path / "y.mesh"),
        "--device",
        "cpu",
    ]
    assert run_cli(args) == 2 and not (tmp_path / "y.ply").exists()
