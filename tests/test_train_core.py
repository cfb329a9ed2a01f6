"""The training core made ready for a GPU: mixed precision (exercised on the CPU through CPU autocast), the
step's schedules and loss terms, checkpointed state, the scene loader's downscaling, and bad input refused
before training starts. Runs real training steps on the small rendered mug (``mug_dataset`` in conftest)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neus_stage.train.encodings as encodings
import neus_stage.train.hull_grid as hull_grid
from neus_stage.errors import StageError
from neus_stage.geometry.cameras import decompose_projection
from neus_stage.train import checkpoint, losses, prepare, trainer
from neus_stage.train.config import resolve_config
from neus_stage.train.data import NeusScene
from neus_stage.train.device import autocast_dtype
from neus_stage.train.fields import NeuSModel
from neus_stage.train.hull_grid import hull_prior_grid
from neus_stage.train.losses import loss_terms
from neus_stage.train.renderer import render_rays
from neus_stage.train.schedule import Schedule
from neus_stage.train.trainer import train

CPU = torch.device("cpu")
TINY = dict(steps=6, n_rays=48, validate_every=0, checkpoint_every=1000, log_every=2, val_downscale=4)
# every preset, shrunk to a few seconds on a CPU: the code paths, not the sizes
SHRUNK = {
    "cpu": {},
    "cpu without masks (NeRF++ background)": {"use_mask": False, "bg_hidden": 32, "bg_layers": 2},
    "fast": {
        "n_levels": 8,
        "log2_hashmap_size": 14,
        "finest_resolution": 256,
        "n_samples": 32,
        "sample_budget": 1200,
        "eikonal_points": 64,
        "occupancy_resolution": 32,
    },
    "neus": {
        "sdf_hidden": 64,
        "sdf_layers": 4,
        "skip_layers": "[2]",
        "feature_dim": 32,
        "color_hidden": 32,
        "color_layers": 2,
        "n_rays": 24,
        "n_samples": 16,
        "n_importance": 16,
    },
}


def _preset(name: str) -> str:
    return name.split()[0]


# ============================================================================================ precision
@pytest.mark.parametrize("name", sorted(SHRUNK))
def test_every_preset_trains_under_cpu_autocast(name, mug_dataset, tmp_path):
    """precision=bf16 on the CPU runs each preset's mixed-precision path (autocast around rendering, the
    encoding in reduced precision, the MLPs in fp32, scatters in the destination's dtype): the cpu, cpu
    without masks and neus presets crashed there in ``color.index_put`` (an fp16 source into fp32)."""
    cfg = resolve_config(_preset(name), {**TINY, **SHRUNK[name], "precision": "bf16"})
    metrics = train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])
    assert metrics["autocast"] == "bfloat16" and metrics["steps"] == TINY["steps"]
    assert np.isfinite(metrics["val_psnr"]) and np.isfinite(metrics["inv_s"])
    model, _, _ = checkpoint.load_model(tmp_path / "checkpoint.pt", device="cpu")
    with torch.no_grad():
        assert torch.isfinite(model.sdf(torch.rand(100, 3) - 0.5)).all()


def test_fp16_on_the_cpu_scales_the_loss_and_checkpoints_the_scaler(mug_dataset, tmp_path):
    cfg = resolve_config("cpu", {**TINY, "precision": "fp16"})
    metrics = train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])
    assert metrics["autocast"] == "float16"
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["scaler"]["scale"] > 1.0  # a live GradScaler, saved with the run


def test_under_autocast_only_the_encoding_is_reduced_precision():
    torch.manual_seed(0)
    model = NeuSModel(resolve_config("cpu", {"n_samples": 64}), -torch.ones(3), torch.ones(3), CPU)
    with torch.no_grad():
        model.sdf_net.encoding.enc.params.normal_(0.0, 0.05)
        model.variance.fill_(0.6)
    x = torch.rand(500, 3) * 1.6 - 0.8
    o, d = torch.tensor([[0.0, 0.1, -3.0]]).repeat(8, 1), torch.tensor([[0.0, 0.0, 1.0]]).repeat(8, 1)
    with torch.no_grad():
        ref_sdf, ref_feat = model.sdf_feature(x)
        ref = render_rays(model, o, d, model.cfg, occupancy=None, cos_anneal=1.0, train=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sdf, feat = model.sdf_feature(x)
            out = render_rays(model, o, d, model.cfg, occupancy=None, cos_anneal=1.0, train=False)
    assert sdf.dtype == feat.dtype == torch.float32  # the MLP ran in fp32 on the reduced-precision features
    assert all(out[k].dtype == torch.float32 for k in ("rgb", "opacity", "normal", "depth"))
    # only the encoding's quantisation (bf16: 8 bits of mantissa) separates the two
    assert 0 < float((sdf - ref_sdf).abs().max()) < 5e-3
    torch.testing.assert_close(out["opacity"], ref["opacity"], atol=0.05, rtol=0)


def test_auto_precision_is_fp16_only_with_the_tinycudann_encoding(monkeypatch):
    """precision=auto: fp16 where the encoding is tinycudann's; tinycudann being importable never switches a
    model that does not use it (torch encoding, the mlp model, the CPU) to fp16."""
    monkeypatch.setattr(encodings, "tinycudann_available", lambda: True)
    cuda = torch.device("cuda")  # only resolved here, nothing runs on it
    assert autocast_dtype(resolve_config("fast", {"encoding_backend": "torch"}), cuda) is None
    assert autocast_dtype(resolve_config("neus"), cuda) is None
    assert autocast_dtype(resolve_config("cpu"), CPU) is None
    assert autocast_dtype(resolve_config("cpu", {"precision": "bf16"}), CPU) == torch.bfloat16
    with pytest.raises(StageError, match="precision=bf16 with the tinycudann encoding"):
        autocast_dtype(resolve_config("fast", {"precision": "bf16"}), cuda)


def test_a_precision_the_device_cannot_run_is_refused_before_training(monkeypatch, mug_dataset, tmp_path):
    def no_autocast(*args, **kwargs):
        raise RuntimeError("autocast to this dtype is not supported here")

    monkeypatch.setattr(trainer.torch, "autocast", no_autocast)
    with pytest.raises(StageError, match="precision=fp16: this torch build cannot autocast to fp16 on cpu"):
        train(
            resolve_config("cpu", {**TINY, "precision": "fp16"}),
            mug_dataset["dataset"],
            tmp_path / "run",
            hull_path=mug_dataset["hull"],
        )
    assert not (tmp_path / "run").exists()
    with pytest.raises(StageError, match="choose one of auto, fp32, fp16, bf16"):
        resolve_config("cpu", {"precision": "fp8"})


# ==================================================================================== schedules, losses
def test_schedule_update_ties_the_curvature_weight_to_the_active_level():
    cfg = resolve_config(
        "cpu", dict(steps=2000, start_levels=4, level_every=200, curvature_weight=1e-3, curvature_warmup=100)
    )
    sched = Schedule(cfg)
    scale = encodings.grid_levels(cfg.n_levels, cfg.base_resolution, cfg.finest_resolution, cfg.log2_hashmap_size)[0]
    assert sched.update(50).curvature_weight == pytest.approx(0.5e-3)  # warming up
    assert sched.update(150).curvature_weight == pytest.approx(1e-3)
    v = sched.update(450)  # two levels added: the finite-difference step shrank by scale^2
    assert v.levels == 6 and v.curvature_weight == pytest.approx(1e-3 / scale**2)


def test_anneal_end_depends_on_the_mask_mode():
    """NeuS anneals the cos term only without masks (its mask configs set anneal_end to 0)."""
    with_masks = Schedule(resolve_config("cpu"))
    without = Schedule(resolve_config("cpu", {"use_mask": False}))
    assert with_masks.update(0).cos_anneal == 1.0
    assert without.update(0).cos_anneal == 0.0 and without.update(250).cos_anneal == pytest.approx(0.5)
    assert resolve_config("neus").anneal_end == 0 and resolve_config("neus").anneal_end_no_mask == 50000


def test_hull_prior_fade_keeps_the_outside_and_neutralises_the_inside():
    res = 48
    c = (np.arange(res) + 0.5) / res * 2 - 1
    r = np.linalg.norm(np.stack(np.meshgrid(c, c, c, indexing="ij"), -1), axis=-1)
    prior = torch.from_numpy(hull_prior_grid(r < 0.5, np.full(3, 2.0 / res)))
    cfg = resolve_config("cpu", {"hull_prior": "full", "hull_prior_fade": 100, "steps": 400})
    model = NeuSModel(cfg, -torch.ones(3), torch.ones(3), CPU, prior)
    inside, outside = torch.tensor([[0.1, 0.0, 0.0]]), torch.tensor([[0.8, 0.0, 0.0]])
    sched = Schedule(cfg)
    values = []
    for step in (0, 50, 100, 300):
        model.sdf_net.prior_weight = sched.update(step).prior_weight
        with torch.no_grad():
            values.append((float(model.sdf(inside)), float(model.sdf(outside))))
    assert [sched.update(s).prior_weight for s in (0, 50, 100, 300)] == [1.0, 0.5, 0.0, 0.0]
    assert values[0][0] < -0.3 and values[1][0] == pytest.approx(values[0][0] / 2, abs=0.01)
    assert abs(values[2][0]) < 0.01  # the inside is the network's to decide
    assert all(v[1] == pytest.approx(values[0][1], abs=1e-6) for v in values)  # the outside stays the hull's
    # hull_prior=outside: no fade; the per-cell share (prior_keep, 0 while training) neutralises the inside
    assert Schedule(resolve_config("cpu")).update(0).prior_weight == 1.0


def test_colour_loss_is_normalised_as_neus_and_eikonal_covers_the_box_points():
    out = {
        "rgb": torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]),
        "opacity": torch.tensor([0.9, 0.1]),
        "eikonal": torch.tensor(0.2),
        "curvature": torch.tensor(0.0),
        "n_eval": 30,
    }
    batch = {"rgb": torch.tensor([[0.6, 0.7, 0.8], [1.0, 1.0, 1.0]]), "mask": torch.tensor([1.0, 0.0])}
    terms = loss_terms(out, batch, resolve_config("cpu"), torch.full((10,), 1.0))
    assert float(terms["color"]) == pytest.approx(0.6, rel=1e-4)  # (0.1 + 0.2 + 0.3) / 1 mask pixel
    assert float(terms["eikonal"]) == pytest.approx((0.2 * 30 + 10) / 40)
    no_mask = loss_terms(out, batch, resolve_config("cpu", {"use_mask": False}), None)
    assert float(no_mask["color"]) == pytest.approx((0.6 + 3.0) / 2, rel=1e-4)


def test_variance_has_its_own_learning_rate():
    cfg = resolve_config("cpu", {"lr_variance": 2e-3})
    model = NeuSModel(cfg, -torch.ones(3), torch.ones(3), CPU)
    groups = {g["name"]: g for g in prepare.make_optimizer(model, cfg).param_groups}
    assert groups["variance"]["lr"] == 2e-3 and groups["variance"]["params"] == [model.variance]
    assert groups["encoding"]["lr"] == cfg.lr and groups["mlp"]["lr"] == cfg.lr_mlp
    assert all(p is not model.variance for p in groups["mlp"]["params"])


# ============================================================================================ resuming
def test_resume_restores_the_grad_scaler_and_the_adaptive_ray_count(mug_dataset, tmp_path, monkeypatch):
    cfg = resolve_config("cpu", {**TINY, "steps": 12, "precision": "fp16", "sample_budget": 2500})
    real_render = trainer.render_rays
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # SIGINT during the 7th step: checkpoint, then stop
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(trainer, "render_rays", interrupted)
    with pytest.raises(StageError, match="stopped by signal"):
        train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert state["step"] == 7 and state["n_rays"] != cfg.n_rays  # the ray count adapted to the budget
    assert state["scaler"]["scale"] > 0 and state["occupancy"]["density"].shape == (64, 64, 64)

    monkeypatch.setattr(trainer, "render_rays", real_render)
    seen = []
    real_sample = NeusScene.sample
    monkeypatch.setattr(NeusScene, "sample", lambda self, n, *a: seen.append(n) or real_sample(self, n, *a))
    resumed = {}
    real_load = trainer.torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(
        trainer.torch.amp.GradScaler, "load_state_dict", lambda self, sd: resumed.update(sd) or real_load(self, sd)
    )
    metrics = train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])
    assert metrics["steps"] == 12 and seen[0] == state["n_rays"]
    assert resumed["scale"] == state["scaler"]["scale"]


# ================================================================================================ data
def test_downscale_by_a_non_divisor_keeps_the_rays(mug_dataset):
    """96x72 by 5: the right and bottom edges are cropped to 95x70, so each pixel is one 5x5 block and the
    intrinsics stay exact (resizing 96 to 19 would have stretched the image by 96/95)."""
    full = NeusScene(mug_dataset["dataset"])
    small = NeusScene(mug_dataset["dataset"], downscale=5)
    assert small.images.shape == (12, 14, 19, 3)
    v = torch.tensor([1, 5, 11])
    y, x = torch.tensor([0, 7, 13]), torch.tensor([0, 10, 18])
    _, d_small = small.rays(v, y, x)
    _, d_full = full.rays(v, 5 * y.float() + 2, 5 * x.float() + 2)  # the centre of the 5x5 block
    torch.testing.assert_close(d_small, d_full, atol=1e-6, rtol=0)
    block = full.images[11, 65:70, 90:95].float().mean((0, 1))
    assert (small.images[11, 13, 18].float() - block).abs().max() <= 1.0


# =========================================================================================== bad input
@pytest.fixture
def bad_copy(mug_dataset, tmp_path) -> Path:
    root = tmp_path / "scene"
    shutil.copytree(mug_dataset["dataset"], root / "dataset")
    shutil.copy2(mug_dataset["hull"], root / "hull.npz")
    return root


def _run(root: Path, **overrides) -> dict:
    return train(
        resolve_config("cpu", {**TINY, **overrides}), root / "dataset", root / "run", hull_path=root / "hull.npz"
    )


def _edit_cameras(root: Path, edit) -> None:
    path = root / "dataset" / "cameras_sphere.npz"
    data = dict(np.load(path))
    edit(data)
    np.savez(path, **data)


def test_nan_pixels_are_refused_before_training(bad_copy):
    img = np.full((72, 96), 0.5, dtype=np.float32)
    img[3, 4] = np.nan
    (bad_copy / "dataset" / "image" / "000.png").unlink()
    Image.fromarray(img, mode="F").save(bad_copy / "dataset" / "image" / "000.tif")
    with pytest.raises(StageError, match=r"image/000\.tif: 1 pixel\(s\) are NaN or infinite"):
        _run(bad_copy)
    assert not (bad_copy / "run").exists()


def test_bad_cameras_are_refused_before_training(bad_copy):
    ds = bad_copy / "dataset"
    original = dict(np.load(ds / "cameras_sphere.npz"))

    def nan(d):
        d["world_mat_3"] = d["world_mat_3"].copy()
        d["world_mat_3"][0, 1] = np.nan

    _edit_cameras(bad_copy, nan)
    with pytest.raises(StageError, match="cameras_sphere.npz: holds NaN or infinite values"):
        _run(bad_copy)

    def turned_away(d):  # camera 2 turned 180 deg about its own y axis: same centre, looking away
        d.update(original)
        wm = d["world_mat_2"].copy()
        K, pose = decompose_projection(wm[:3, :4])
        R, c = pose[:3, :3].T, pose[:3, 3]
        R = np.diag([-1.0, 1.0, -1.0]) @ R
        wm[:3, :3], wm[:3, 3] = K @ R, K @ (-R @ c)
        d["world_mat_2"] = wm

    _edit_cameras(bad_copy, turned_away)
    with pytest.raises(StageError, match="the object lies behind the camera.s. of 002"):
        _run(bad_copy)

    def inside(d):  # camera 5 moved into the object box
        d.update(original)
        wm = d["world_mat_5"].copy()
        K, pose = decompose_projection(wm[:3, :4])
        h = np.load(bad_copy / "hull.npz")
        centre_n = (h["bounds_min"] + h["bounds_max"]) / 2
        s = d["scale_mat_0"]
        c = s[:3, :3] @ centre_n + s[:3, 3]
        R = pose[:3, :3].T
        wm[:3, 3] = K @ (-R @ c)
        d["world_mat_5"] = wm

    _edit_cameras(bad_copy, inside)
    with pytest.raises(StageError, match="camera.s. of 005 lie inside the object box"):
        _run(bad_copy)
    assert not (bad_copy / "run").exists()


@pytest.mark.parametrize(
    "fill,message", [(False, "the visual hull is empty"), (True, "the visual hull fills 100% of its box")]
)
def test_a_hull_that_bounds_nothing_is_refused(bad_copy, fill, message):
    h = dict(np.load(bad_copy / "hull.npz"))
    h["occupancy"] = np.full_like(h["occupancy"], fill)
    np.savez(bad_copy / "hull.npz", **h)
    with pytest.raises(StageError, match=f"hull.npz: {message}"):
        _run(bad_copy)
    assert not (bad_copy / "run").exists()


def test_config_yaml_records_the_autocast(mug_dataset, tmp_path):
    import yaml

    train(
        resolve_config("cpu", {**TINY, "steps": 2, "precision": "bf16"}),
        mug_dataset["dataset"],
        tmp_path,
        hull_path=mug_dataset["hull"],
    )
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["precision"] == "bf16" and saved["autocast"] == "bfloat16"
    assert json.loads((tmp_path / "metrics.json").read_text())["autocast"] == "bfloat16"


def test_hull_prior_without_scipy_matches_scipy():
    """A GPU node's stock environment may lack scipy: the torch distance transform gives the same prior."""
    rng = np.random.default_rng(0)
    occ = np.zeros((20, 24, 18), dtype=bool)
    occ[4:15, 5:20, 3:14] = True
    occ[8:11, 9:15, 7:14] = False  # a cavity open to one side
    occ &= rng.random(occ.shape) > 0.05
    voxel = np.array([0.05, 0.04, 0.06])
    exact = hull_grid.hull_prior_grid(occ, voxel, smooth=0)
    np.testing.assert_allclose(hull_grid.hull_prior_grid_torch(occ, voxel, smooth=0), exact, atol=1e-6)
    smooth = hull_grid.hull_prior_grid_torch(occ, voxel)
    np.testing.assert_allclose(
        smooth[3:-3, 3:-3, 3:-3], hull_grid.hull_prior_grid(occ, voxel)[3:-3, 3:-3, 3:-3], atol=1e-5
    )


# ============================================================================================= carving
@pytest.fixture(scope="module")
def bowl_dataset(tmp_path_factory) -> dict[str, Path]:
    """16 rendered views (96x72) of the synthetic bowl with true masks and cameras, and its visual hull."""
    from neus_stage.dataset import build_dataset_from_reference
    from neus_stage.hull import carve_visual_hull
    from neus_stage.synth import render_scene

    root = tmp_path_factory.mktemp("bowl")
    render_scene(root / "render", scene="bowl", n_views=16, width=96, height=72, seed=0, gt_resolution=48)
    build_dataset_from_reference(
        root / "render" / "photos", root / "render" / "cameras_sphere.npz", root / "render" / "masks", root / "dataset"
    )
    carve_visual_hull(root / "dataset", root / "bbox.json", root / "hull.npz", resolution=64)
    return {"dataset": root / "dataset", "hull": root / "hull.npz", "render": root / "render"}


def test_training_carves_the_inside_of_a_bowl_that_the_hull_fills(bowl_dataset, tmp_path):
    """The visual hull of a bowl is solid up to its rim. With the presets' prior (hull_prior=outside) the
    inside is the photos' to decide: a few hundred CPU steps open the bowl, while its wall stays solid."""
    cfg = resolve_config(
        "cpu",
        {
            "steps": 300,
            "n_rays": 128,
            "validate_every": 0,
            "log_every": 50,
            "checkpoint_every": 1000,
            "val_downscale": 2,
        },
    )
    assert cfg.hull_prior == "outside"
    metrics = train(cfg, bowl_dataset["dataset"], tmp_path, hull_path=bowl_dataset["hull"])
    assert metrics["val_mask_iou"] > 0.85
    scale = np.load(bowl_dataset["dataset"] / "cameras_sphere.npz")["scale_mat_0"]

    def normalised(p):
        return torch.from_numpy((np.asarray(p, dtype=np.float64) - scale[:3, 3]) / scale[0, 0]).float()

    # world points (the bowl: a shell of radius 0.74..0.80 about (0, 0, 0.82) below its rim at z = 0.8)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(400, 3))
    d[:, 2] = -np.abs(d[:, 2]) - 0.3  # the lower half, away from the rim
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    cavity = np.array([0.0, 0.0, 0.82]) + d * rng.uniform(0.05, 0.6, (400, 1))
    wall = np.array([0.0, 0.0, 0.82]) + d * 0.77
    sdf = checkpoint.load_sdf_function(tmp_path / "checkpoint.pt", device="cpu")
    with torch.no_grad():
        carved = float((sdf(normalised(cavity)) > 0).float().mean())
        solid = float((sdf(normalised(wall)) < 0.02).float().mean())
    assert carved > 0.65, carved  # the hull's start had all of it inside (0.75 measured here)
    assert solid > 0.8, solid


def test_seen_cells_stop_at_the_visible_surface():
    """hull_fill_unseen's visibility: from cameras all around a solid ball, the space outside it and its
    surface are seen, its inside is not (so the hull's inside returns there after training)."""
    from neus_stage.train.renderer import OccupancyGrid, seen_cells

    torch.manual_seed(0)
    cfg = resolve_config("cpu", {"n_samples": 96})
    model = NeuSModel(cfg, -torch.ones(3), torch.ones(3), CPU)  # NeuS's sphere of radius 0.5
    with torch.no_grad():
        model.variance.fill_(0.6)
    res = 24
    occ = OccupancyGrid(model.box_min, model.box_max, torch.ones(res, res, res, dtype=torch.bool))
    g = torch.linspace(-0.95, 0.95, 40)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    batches = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            o = torch.zeros(len(g) ** 2, 3)
            o[:, axis] = 3.0 * sign
            o[:, (axis + 1) % 3], o[:, (axis + 2) % 3] = xx.flatten(), yy.flatten()
            d = torch.zeros_like(o)
            d[:, axis] = -sign
            batches.append((o, d))
    seen = seen_cells(model, batches, cfg, occ)
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    r = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).norm(dim=-1)
    assert seen[(r > 0.6) & (r < 0.9)].all()
    assert not seen[r < 0.35].any()


def test_ssim_is_the_standard_one():
    """Wang et al.'s SSIM (Gaussian window, sigma 1.5): scikit-image's value on a noisy pair, 1 for a copy,
    and inside a mask only the masked pixels count."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((60, 80, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(
        a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert losses.ssim(a, b) == pytest.approx(ref, abs=2e-3)
    assert losses.ssim(a, a) == pytest.approx(1.0)
    mask = np.zeros((60, 80), bool)
    mask[:, :40] = True
    c = b.copy()
    c[:, 40:] = rng.random((60, 40, 3))  # ruin the unmasked half only
    assert losses.ssim(a, c, mask) > losses.ssim(a, c) + 0.1


def test_held_out_views_report_psnr_ssim_and_mask_iou(mug_dataset, tmp_path):
    metrics = train(
        resolve_config("cpu", {**TINY, "holdout_every": 4}),
        mug_dataset["dataset"],
        tmp_path,
        hull_path=mug_dataset["hull"],
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["heldout_views"] and len(saved["heldout_per_view"]) == len(saved["heldout_views"])
    assert all({"psnr", "ssim", "mask_iou"} <= set(v) for v in saved["heldout_per_view"])
    assert 0.0 < saved["heldout_ssim"] <= 1.0 and metrics["heldout_ssim"] == saved["heldout_ssim"]
