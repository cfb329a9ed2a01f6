"""Training: config presets and overrides, the fields, the renderer, the scene loader and the training loop.

The loop runs for real on a small rendered mug (``mug_dataset`` in conftest.py): a 40-step CPU run, a
run stopped by SIGTERM and resumed through the ``neus-stage`` command, and a diverging run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from neus_stage.artifacts.dataset import read_cameras_sphere
from neus_stage.errors import StageError
from neus_stage.geometry.cameras import neus_cameras
from neus_stage.train.checkpoint import load_color_function, load_model, load_sdf_function
from neus_stage.train.config import PRESETS, config_hash, parse_overrides, resolve_config
from neus_stage.train.data import NeusScene
from neus_stage.train.device import pick_device
from neus_stage.train.encodings import TorchHashGrid, grid_levels, sh_encoding
from neus_stage.train.fields import MLPSDF, HashSDF, NeuSModel
from neus_stage.train.hull_grid import hull_prior_grid
from neus_stage.train.prepare import initial_occupancy
from neus_stage.train.renderer import OccupancyGrid, ray_box, render_rays, sample_pdf, sdf_and_gradient
from neus_stage.train.schedule import Schedule
from neus_stage.train.trainer import train

CPU = torch.device("cpu")
BOX = (-torch.ones(3), torch.ones(3))
# the short CPU run every trainer test shares; checkpoint/validate/log cadence do not enter the config hash.
# It starts from the whole visual hull (hull_prior=full): 40 steps from the presets' neutral inside
# (hull_prior=outside) do not yet make an opaque object, and these tests are about the loop, not carving
RUN = dict(steps=40, n_rays=64, validate_every=0, checkpoint_every=20, log_every=5, hull_prior="full")


# =============================================================================================== config
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_resolve(preset):
    cfg = resolve_config(preset)
    assert cfg.preset == preset
    for key, value in PRESETS[preset].items():
        assert getattr(cfg, key) == value, key


def test_auto_preset_and_unknown_preset():
    assert resolve_config("auto", cuda=True).preset == "fast"
    assert resolve_config("auto", cuda=False).preset == "cpu"
    assert resolve_config("auto", cuda=False).encoding_backend == "torch"
    with pytest.raises(StageError, match="unknown training preset 'tiny'"):
        resolve_config("tiny")


def test_unknown_option_names_the_key():
    with pytest.raises(StageError, match="unknown training option 'stepz'"):
        resolve_config("cpu", {"stepz": "10"})
    with pytest.raises(StageError, match="unknown training option 'sdf_hiden'") as err:
        resolve_config("cpu", {"sdf_hiden": "10"})
    assert "did you mean" in str(err.value) and "sdf_hidden" in str(err.value)  # the hint lists close names
    with pytest.raises(StageError, match="'preset'"):  # recorded, not an input
        resolve_config("cpu", {"preset": "fast"})


def test_command_line_strings_are_coerced_to_the_field_types():
    cfg = resolve_config(
        "cpu",
        {
            "steps": "100",
            "use_mask": "false",
            "hull_prior": "full",
            "lr": "1e-3",
            "mask_weight": "1",
            "n_rays": 512.0,
            "sdf_backend": "mlp",
            "skip_layers": "[2, 5]",
        },
    )
    assert cfg.steps == 100 and type(cfg.steps) is int
    assert cfg.use_mask is False and cfg.hull_prior == "full"
    assert cfg.lr == pytest.approx(1e-3) and type(cfg.lr) is float
    assert cfg.mask_weight == 1.0 and type(cfg.mask_weight) is float
    assert cfg.n_rays == 512 and type(cfg.n_rays) is int
    assert cfg.sdf_backend == "mlp"
    assert cfg.skip_layers == (2, 5)
    assert resolve_config("cpu", {"skip_layers": "4"}).skip_layers == (4,)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("steps", "abc", "not a valid value"),
        ("steps", "1.5", "expected an integer"),
        ("use_mask", "1", "expected true/false"),
        ("use_mask", "False", "not a valid value"),  # JSON spelling only
        ("lr", "true", "expected a number"),
        ("lr", '"fast"', "expected a number"),
        ("sdf_backend", "cnn", "choose one of hashgrid, mlp"),
        ("normals", "numeric", "choose one of analytic, finite_difference"),
        ("encoding_backend", "cuda", "choose one of auto, tcnn, torch"),
    ],
)
def test_ill_typed_values_are_errors(key, value, message):
    with pytest.raises(StageError, match=message) as err:
        resolve_config("cpu", {key: value})
    assert key in str(err.value)


def test_boolean_for_an_integer_option_is_an_error():
    with pytest.raises(StageError, match="expected an integer"):
        resolve_config("cpu", {"steps": "true"})


def test_parse_overrides():
    assert parse_overrides(["steps=100", " lr = 0.01", "note=a=b"]) == {"steps": "100", "lr": "0.01", "note": "a=b"}
    with pytest.raises(StageError, match="KEY=VALUE"):
        parse_overrides(["steps"])


def test_config_hash_ignores_logging_only_fields():
    h = config_hash(resolve_config("cpu"))
    assert h == config_hash(resolve_config("cpu"))
    logging_only = dict(checkpoint_every=7, validate_every=3, log_every=1, max_minutes=0.5, threads=2, val_downscale=8)
    assert config_hash(resolve_config("cpu", logging_only)) == h
    for key, value in dict(steps=2001, lr=2e-2, lr_mlp=1e-4, n_rays=128, seed=1, hull_prior="full").items():
        assert config_hash(resolve_config("cpu", {key: value})) != h, key
    assert config_hash(resolve_config("fast")) != h


def test_lr_schedule_warmup_then_cosine():
    cfg = resolve_config("cpu", dict(steps=1100, warmup_steps=100, lr_alpha=0.05))
    lr_factor = Schedule(cfg).lr_factor
    assert lr_factor(0) == pytest.approx(0.01)
    assert lr_factor(49) == pytest.approx(0.5)
    assert lr_factor(100) == pytest.approx(1.0)
    assert lr_factor(600) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(1100) == pytest.approx(0.05)
    values = [lr_factor(s) for s in range(100, 1101, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_time_budget_compresses_every_schedule():
    cfg = resolve_config("cpu", dict(steps=2000, warmup_steps=100, level_every=200, anneal_end=500, max_minutes=1.0))
    full, fitted = Schedule(cfg), Schedule(cfg)
    fitted.fit_time(done=100, first=0, elapsed=12.0)  # 100 steps in 12 s: 48 s left fit 400 more steps
    assert fitted.length == 500
    # a quarter of the steps: everything happens four times sooner
    assert fitted.lr_factor(24) == pytest.approx(full.lr_factor(99))
    assert fitted.lr_factor(499) == pytest.approx(0.05, abs=1e-3)
    assert fitted.levels(50) == full.levels(200) == cfg.start_levels + 1
    assert fitted.levels(300) == cfg.n_levels  # every level active before the end
    assert fitted.cos_anneal(125) == full.cos_anneal(500) == 1.0
    assert fitted.cos_anneal(25) == pytest.approx(full.cos_anneal(100)) == pytest.approx(0.2)
    assert not fitted.update(64).occupancy_every_cell and Schedule(cfg).update(64).occupancy_every_cell
    assert fitted.levels(0) == cfg.n_levels  # levels never switch off again
    fast = Schedule(cfg)
    fast.fit_time(done=100, first=0, elapsed=1.0)  # time for more than cfg.steps: the steps are the limit
    assert fast.length == cfg.steps


# =============================================================================================== fields
def test_grid_levels_dense_then_hashed():
    pls, levels = grid_levels(16, 16, 2048, 19)  # instant-NGP's defaults
    assert pls == pytest.approx(1.3819, abs=1e-4)
    assert [lv["res"] for lv in levels][:3] == [16, 23, 31] and levels[-1]["res"] == 2048
    offset = 0
    for lv in levels:
        assert lv["res"] == math.ceil(lv["scale"]) + 1
        dense = lv["res"] ** 3
        assert lv["hashed"] == (dense > 2**19)
        assert lv["size"] == (2**19 if lv["hashed"] else -(-dense // 8) * 8)
        assert lv["size"] % 8 == 0
        assert lv["offset"] == offset
        offset += lv["size"]
    flags = [lv["hashed"] for lv in levels]
    assert flags == sorted(flags) and 0 < sum(flags) < len(levels)  # coarse levels dense, fine levels hashed
    # the cpu preset's table
    _, cpu = grid_levels(10, 16, 256, 15)
    assert [lv["hashed"] for lv in cpu] == [False] * 3 + [True] * 7  # 30^3 <= 2^15 < 41^3


def _vertex_x(k: np.ndarray, scale: float) -> torch.Tensor:
    """The input in [0,1] that lands exactly on integer grid coordinate k of a level (pos = x*scale + 0.5)."""
    return torch.tensor((k - 0.5) / scale, dtype=torch.float64)


def test_torch_hash_grid_indexes_dense_and_hashed_levels():
    enc = TorchHashGrid(n_levels=6, n_features=2, log2_size=10, base=4, finest=64).double()
    assert enc.out_dim == 12
    with torch.no_grad():
        enc.enc.params.copy_(torch.randn_like(enc.enc.params))
    table = enc.enc.params.view(-1, 2)
    _, levels = grid_levels(6, 4, 64, 10)
    x = torch.rand(50, 3, dtype=torch.float64)
    assert enc(x).shape == (50, 12)

    # at a grid vertex the feature is exactly the table entry of that vertex
    lv0, lvl = levels[0], levels[-1]
    assert not lv0["hashed"] and lvl["hashed"]
    k = np.array([1, 2, 3])
    out = enc(_vertex_x(k, lv0["scale"])[None])[0].view(6, 2)
    dense_index = k[0] + k[1] * lv0["res"] + k[2] * lv0["res"] ** 2
    torch.testing.assert_close(out[0], table[lv0["offset"] + dense_index])

    k = np.array([17, 40, 55])
    out = enc(_vertex_x(k, lvl["scale"])[None])[0].view(6, 2)
    h = (int(k[0]) * 1) ^ ((int(k[1]) * 2654435761) & 0xFFFFFFFF) ^ ((int(k[2]) * 805459861) & 0xFFFFFFFF)
    torch.testing.assert_close(out[-1], table[lvl["offset"] + h % lvl["size"]])

    # half way between two vertices along x: the mean of the two entries (trilinear)
    a, b = np.array([1, 1, 1]), np.array([2, 1, 1])
    mid = (_vertex_x(a, lv0["scale"]) + _vertex_x(b, lv0["scale"])) / 2
    fa, fb, fm = (enc(v[None])[0].view(6, 2)[0] for v in (_vertex_x(a, lv0["scale"]), _vertex_x(b, lv0["scale"]), mid))
    torch.testing.assert_close(fm, (fa + fb) / 2)


def test_torch_hash_grid_is_continuous():
    torch.manual_seed(0)
    enc = TorchHashGrid(n_levels=8, n_features=2, log2_size=12, base=4, finest=128)
    with torch.no_grad():
        enc.enc.params.normal_()
    x = torch.rand(500, 3) * 0.98 + 0.01
    near = enc(x + 1e-5 * torch.randn_like(x)) - enc(x)
    far = enc(torch.rand(500, 3)) - enc(x)
    assert near.abs().max() < 0.02  # Lipschitz ~ finest resolution x feature scale
    assert far.abs().mean() > 0.3


def _cfg(**kw):
    return resolve_config("cpu", kw)


def test_hash_sdf_without_prior_starts_as_a_sphere():
    torch.manual_seed(0)
    net = HashSDF(_cfg(init_radius=0.3), *BOX, CPU)
    x = torch.rand(4000, 3) * 2 - 1
    with torch.no_grad():
        sdf, feat = net(x)
    assert feat.shape == (4000, 15)
    assert (sdf - (x.norm(dim=-1) - 0.3)).abs().max() < 1e-2


def _ball_hull(res: int = 48, radius: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(res) + 0.5) / res * 2 - 1
    X = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    return np.linalg.norm(X, axis=-1) < radius, np.full(3, 2.0 / res)


def test_hash_sdf_with_hull_prior_starts_at_the_hull():
    occ, voxel = _ball_hull()
    prior = torch.from_numpy(hull_prior_grid(occ, voxel))
    torch.manual_seed(0)
    net = HashSDF(_cfg(init_radius=0.9, hull_prior="full"), *BOX, CPU, prior)  # the prior replaces the sphere
    x = torch.rand(5000, 3) * 2 - 1
    r = x.norm(dim=-1)
    with torch.no_grad():
        sdf = net(x)[0]
    sel = (r > 0.1) & (r < 0.8)
    err = (sdf - (r - 0.4))[sel].abs()
    assert err.max() < 0.05 and err.mean() < 0.015  # a voxel is 0.042
    assert (sdf[r < 0.3] < 0).all() and (sdf[r > 0.5] > 0).all()
    # hull_prior=outside (the fast presets): the same outside, a neutral inside that the photos decide
    torch.manual_seed(0)
    outside = HashSDF(_cfg(hull_prior="outside"), *BOX, CPU, prior)
    with torch.no_grad():
        sdf_o = outside(x)[0]
    torch.testing.assert_close(sdf_o[r > 0.45], sdf[r > 0.45])
    assert sdf_o[r < 0.3].abs().max() < 1e-3


def test_mlp_sdf_geometric_init_is_a_sphere_of_radius_one_half():
    torch.manual_seed(0)
    net = MLPSDF(resolve_config("neus"))
    d = torch.nn.functional.normalize(torch.randn(256, 3), dim=-1)
    t = torch.linspace(0, 1, 401)
    with torch.no_grad():
        s = net((d[:, None] * t[None, :, None]).reshape(-1, 3))[0].view(256, 401)
    assert (s[:, 0] < 0).all() and (s[:, -1] > 0).all()
    crossing = t[(s < 0).sum(1)]  # first sample outside along each ray
    assert 0.4 < float(crossing.median()) < 0.55
    assert crossing.min() > 0.3 and crossing.max() < 0.72
    assert ((s[:, 1:] - s[:, :-1]) >= 0).float().mean() > 0.95  # grows outwards


def test_sh_encoding_is_orthonormal():
    d = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    for degree, n in ((1, 1), (2, 4), (3, 9), (4, 16)):
        assert sh_encoding(d, degree).shape == (len(d), n)
    Y = sh_encoding(d, 4)
    assert torch.allclose(Y[:, 0], torch.full_like(Y[:, 0], 0.28209479177387814))  # degree-1 term: constant
    gram = Y.T @ Y / len(d) * 4 * math.pi  # Monte-Carlo integral over the sphere
    assert (gram - torch.eye(16, dtype=gram.dtype)).abs().max() < 0.03
    # a view-dependent term really depends on the direction
    assert not torch.allclose(sh_encoding(d[:5], 2)[:, 1:], sh_encoding(-d[:5], 2)[:, 1:])


def test_hash_sdf_autograd_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = HashSDF(_cfg(), *BOX, CPU).double()
    with torch.no_grad():
        net.encoding.enc.params.normal_(0.0, 0.05)
        net.layers[-1].weight.normal_(0.0, 0.1)
    x = (torch.rand(200, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    sdf = net(x)[0]
    grad = torch.autograd.grad(sdf.sum(), x)[0]
    h = 1e-6
    fd = torch.stack(
        [(net(x + h * e)[0] - net(x - h * e)[0]) / (2 * h) for e in torch.eye(3, dtype=torch.float64)], -1
    ).detach()
    assert (grad - x.detach() / x.detach().norm(dim=-1, keepdim=True)).abs().max() > 0.1  # not just the sphere
    close = ((grad - fd).abs() < 1e-4 * (1 + fd.abs())).all(-1)
    assert close.float().mean() > 0.97  # a few points may straddle a grid-cell edge


def _sphere_model(**kw) -> NeuSModel:
    torch.manual_seed(0)
    cfg = _cfg(init_radius=0.5, n_samples=128, **kw)
    model = NeuSModel(cfg, *BOX, CPU)
    with torch.no_grad():
        model.variance.data.fill_(0.6)  # inv_s = e^6: a sharp surface
    return model


def test_sdf_and_gradient_normals_and_laplacian():
    model = _sphere_model()
    x = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1) * torch.empty(100, 1).uniform_(0.3, 0.9)
    r = x.norm(dim=-1, keepdim=True)
    sdf, feat, grad, lap = sdf_and_gradient(model, x, model.cfg, train=False)  # finite differences
    torch.testing.assert_close(sdf, r[:, 0] - 0.5, atol=2e-3, rtol=0)
    torch.testing.assert_close(grad, x / r, atol=1e-2, rtol=0)
    torch.testing.assert_close(lap, 2 / r[:, 0], rtol=0.05, atol=0.05)  # Laplacian of |x| is 2/|x|
    cfg_a = resolve_config("cpu", {"normals": "analytic"})
    _, _, grad_a, lap_a = sdf_and_gradient(model, x, cfg_a, train=False)
    assert lap_a is None
    torch.testing.assert_close(grad_a, x / r, atol=1e-2, rtol=0)


# ============================================================================================= renderer
def test_ray_box_near_far_and_misses():
    bmin, bmax = BOX
    o = torch.tensor([[-3.0, 0, 0], [0, 0, 3], [0, 0, 0], [-2, -2, -2], [-3, 2, 0], [3, 0, 0]])
    d = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]])
    d = d / d.norm(dim=-1, keepdim=True)
    near, far, hit = ray_box(o, d, bmin, bmax)
    assert hit.tolist() == [True, True, True, True, False, False]  # last two: passes beside / box behind
    s3 = math.sqrt(3)
    torch.testing.assert_close(near[:4], torch.tensor([2.0, 2.0, 0.0, s3]))  # inside: near clamps to 0
    torch.testing.assert_close(far[:4], torch.tensor([4.0, 4.0, 1.0, 3 * s3]))
    assert (far[4:] > near[4:]).all()  # misses keep a tiny valid interval


def _parallel_rays(offsets: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    o = torch.tensor([[0.0, b, -3.0] for b in offsets])
    d = torch.tensor([[0.0, 0.0, 1.0]] * len(offsets))
    return o, d


def test_render_rays_on_a_sphere():
    model = _sphere_model(early_stop_eps=0.0)
    hits, misses = [0.0, 0.2, 0.35], [0.65, 0.8, 0.95]
    o, d = _parallel_rays(hits + misses + [1.5])  # the last passes beside the box
    with torch.no_grad():
        out = render_rays(model, o, d, model.cfg, occupancy=None, cos_anneal=1.0, train=False)
    op = out["opacity"]
    assert (op[:3] > 0.95).all(), op
    assert (op[3:6] < 0.05).all(), op
    assert op[6] == 0
    expected_depth = torch.tensor([3 - math.sqrt(0.25 - b * b) for b in hits])
    torch.testing.assert_close(out["depth"][:3] / op[:3], expected_depth, atol=0.03, rtol=0)
    torch.testing.assert_close(out["normal"][0], torch.tensor([0.0, 0.0, -1.0]), atol=0.05, rtol=0)
    assert out["rgb"].shape == (7, 3) and ((out["rgb"] >= 0) & (out["rgb"] <= 1)).all()
    assert out["n_eval"] == 6 * 128  # every sample of the rays inside the box, none of the last ray
    assert out["eikonal"] < 5e-3  # |grad| = 1 for a sphere SDF (up to the finite differences)

    # early ray termination: the samples behind the opaque surface are not evaluated, the image is the same
    fast = _sphere_model()  # early_stop_eps 1e-4
    with torch.no_grad():
        early = render_rays(fast, o, d, fast.cfg, occupancy=None, cos_anneal=1.0, train=False)
    assert early["n_eval"] < 0.7 * out["n_eval"]
    for key in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(early[key], out[key], atol=2e-3, rtol=0)


def test_background_model_shows_where_the_object_lets_light_through():
    model = _sphere_model(background="nerf++", bg_hidden=32, bg_layers=4)
    assert _sphere_model().background is None and _sphere_model(use_mask=False).background is not None  # auto
    sky = torch.tensor([0.2, 0.6, 0.9])
    with torch.no_grad():  # a background that is this colour everywhere
        model.background.rgb.weight.zero_()
        model.background.rgb.bias.copy_(torch.logit(sky))
    o, d = _parallel_rays([0.0, 0.2, 0.8, 1.5])  # two hit the sphere, one crosses the box beside it, one misses it
    with torch.no_grad():
        out = render_rays(model, o, d, model.cfg, occupancy=None, cos_anneal=1.0, train=False)
        alone = render_rays(_sphere_model(), o, d, model.cfg, occupancy=None, cos_anneal=1.0, train=False)
    torch.testing.assert_close(out["opacity"], alone["opacity"])  # the object's own opacity is unchanged
    torch.testing.assert_close(out["rgb"][2:], sky.expand(2, 3), atol=1e-3, rtol=0)  # opaque background
    expected = alone["rgb"][:2] + (1 - alone["opacity"][:2, None]) * sky
    torch.testing.assert_close(out["rgb"][:2], expected, atol=1e-3, rtol=0)


def test_background_model_sees_points_through_the_inverted_sphere():
    from neus_stage.train.fields import BackgroundNeRF

    torch.manual_seed(0)
    bg = BackgroundNeRF(_cfg(bg_hidden=32, bg_layers=4))
    v = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, -0.5]]), dim=-1)
    d = torch.tensor([[0.0, 0.0, 1.0]])
    with torch.no_grad():
        edge = [bg(v * r, d)[0] for r in (1 - 1e-4, 1 + 1e-4)]  # continuous across the unit sphere
        far = [bg(v * r, d)[0] for r in (1e5, 1e8)]  # (x/r, 1/r) -> (v, 0): a finite limit at infinity
        near = [bg(v * r, d)[0] for r in (1.5, 3.0)]
    torch.testing.assert_close(edge[0], edge[1], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(far[0], far[1], atol=1e-3, rtol=1e-3)
    assert all(torch.isfinite(x).all() and (x >= 0).all() for x in edge + far + near)
    assert not torch.allclose(near[0], near[1]) and not torch.allclose(near[1], far[0])


def test_occupancy_grid_skipping_keeps_the_rendering():
    model = _sphere_model()
    res = 32
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    X = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)
    shell = (X.norm(dim=-1) - 0.5).abs() < 0.15
    occ = OccupancyGrid(*BOX, shell)
    o, d = _parallel_rays([0.0, 0.2, 0.35, 0.65, 0.8])
    with torch.no_grad():
        full = render_rays(model, o, d, model.cfg, occupancy=None, cos_anneal=1.0, train=False)
        skip = render_rays(model, o, d, model.cfg, occupancy=occ, cos_anneal=1.0, train=False)
    assert skip["n_eval"] < full["n_eval"] / 2
    torch.testing.assert_close(skip["opacity"], full["opacity"], atol=0.02, rtol=0)
    torch.testing.assert_close(skip["depth"], full["depth"], atol=0.05, rtol=0)


def _cell_radius(res: int) -> torch.Tensor:
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).norm(dim=-1)


def test_occupancy_grid_keeps_the_inside_and_drops_the_empty_space():
    """The occupancy test is NeuS's alpha over one step: near 1 inside the surface, near 0 outside it, so the
    inside stays sampled (a concavity the start filled in can still be carved) and empty space is skipped."""
    model = _sphere_model()  # radius 0.5, inv_s = e^6
    res = 32
    occ = OccupancyGrid(*BOX, torch.ones(res, res, res, dtype=torch.bool), step_size=2 * math.sqrt(3) / 128)
    pts = torch.tensor([[0.45, 0.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, -0.8, 0.01]])
    assert occ.lookup(pts).tolist() == [True, True, False, True]  # before the first update: the whole base
    occ.update(model)  # cell centres (no generator: no jitter)
    r = _cell_radius(res)
    assert occ.grid[r < 0.45].all()  # the inside: alpha ~ 1
    assert not occ.grid[r > 0.7].any()  # empty space beyond the density's reach
    assert occ.grid[(r > 0.47) & (r < 0.51)].all()  # the surface
    assert occ.lookup(pts).tolist() == [True, True, False, False]
    assert occ.occupied_share() == pytest.approx(float(occ.grid.float().mean()))

    # never beyond the base (the visual hull)
    base = torch.zeros(res, res, res, dtype=torch.bool)
    base[: res // 2] = True
    half = OccupancyGrid(*BOX, base)
    half.update(model)
    assert not half.grid[res // 2 :].any() and half.grid[: res // 2].any()

    # a blurry surface (low inv_s) keeps a wider band outside it
    with torch.no_grad():
        model.variance.data.fill_(0.2)  # inv_s = e^2
    blurry = OccupancyGrid(*BOX, torch.ones(res, res, res, dtype=torch.bool), step_size=2 * math.sqrt(3) / 128)
    blurry.update(model)
    assert blurry.grid.sum() > occ.grid.sum()
    assert blurry.grid[r < 0.45].all()


def test_occupancy_grid_remembers_a_decaying_maximum():
    """A cell that held the surface stays occupied for a while after the surface has left it (nerfacc's
    decay of 0.95 per update; 0.5 here for a short test), then is dropped; after the early updates only a
    random quarter of the cells and the occupied ones are evaluated."""
    model = _sphere_model()
    res = 24
    occ = OccupancyGrid(*BOX, torch.ones(res, res, res, dtype=torch.bool), step_size=0.03, threshold=0.01, decay=0.5)
    occ.update(model)
    before = occ.grid.clone()
    with torch.no_grad():  # the surface shrinks from radius 0.5 to 0.25
        model.sdf_net.init_radius = 0.25
    r = _cell_radius(res)
    shell = (r > 0.35) & (r < 0.45)  # was inside, is now empty space
    assert before[shell].all()
    occ.update(model)
    assert occ.grid[shell].all()  # remembered: 0.5 x ~1 > the threshold
    for _ in range(8):
        occ.update(model, torch.Generator().manual_seed(0), every_cell=False)
    assert not occ.grid[shell].any()  # forgotten: 0.5^9 < 0.01
    assert occ.grid[r < 0.2].all()  # the new inside


def test_occupancy_grid_keeps_the_inside_of_a_larger_surface():
    model = _sphere_model()  # sphere of radius 0.5; training without the hull prior starts from it
    res = 32
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    X = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)
    small = (X.abs() < 0.2).all(-1)  # a hull well inside the sphere: no cell near its surface
    occ = OccupancyGrid(*BOX, small)
    occ.update(model)
    assert torch.equal(occ.grid, small)  # every hull cell is inside the sphere: all kept


def test_sample_pdf_puts_samples_where_the_weights_are():
    bins = torch.linspace(0, 1, 65)[None].repeat(3, 1)
    w = torch.zeros(3, 64)
    w[0, 40] = 1.0  # one spike
    w[1, 10], w[1, 50] = 1.0, 3.0  # two spikes, 1:3
    w[2] = 1.0  # uniform
    s = sample_pdf(bins, w, 32)
    assert s.shape == (3, 32)
    assert (s[:, 1:] >= s[:, :-1]).all()
    assert ((s[0] >= 40 / 64) & (s[0] <= 41 / 64)).all()
    in_a = ((s[1] >= 10 / 64) & (s[1] <= 11 / 64)).sum()
    in_b = ((s[1] >= 50 / 64) & (s[1] <= 51 / 64)).sum()
    assert in_a + in_b == 32 and in_b == 3 * in_a
    torch.testing.assert_close(s[2], torch.linspace(0.5 / 32, 1 - 0.5 / 32, 32), atol=1e-3, rtol=0)


# ================================================================================================= data
def test_scene_loads_views_like_the_official_loader(mug_dataset):
    ds = mug_dataset["dataset"]
    scene = NeusScene(ds)
    assert scene.names == [f"{i:03d}" for i in range(12)]
    assert scene.images.shape == (12, 72, 96, 3) and scene.images.dtype == torch.uint8
    assert scene.masks.shape == (12, 72, 96) and scene.has_masks
    img = np.asarray(Image.open(ds / "image" / "003.png").convert("RGB"))
    assert np.array_equal(scene.images[3].numpy(), img)
    world_mats, scale_mat = read_cameras_sphere(ds / "cameras_sphere.npz")
    K, poses = neus_cameras(world_mats, scale_mat)
    torch.testing.assert_close(scene.K, torch.from_numpy(K).float())
    torch.testing.assert_close(scene.poses, torch.from_numpy(poses).float())
    # the ray through a pixel projects back onto that pixel
    v, y, x = torch.tensor([5]), torch.tensor([30]), torch.tensor([70])
    o, d = scene.rays(v, y, x)
    X = (o + 2.0 * d)[0].double().numpy()
    P = (world_mats[5] @ scale_mat)[:3]
    uvw = P @ np.append(X, 1.0)
    assert np.allclose(uvw[:2] / uvw[2], [70, 30], atol=1e-3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(1))


def test_scene_sampling_and_holdout(mug_dataset):
    scene = NeusScene(mug_dataset["dataset"], holdout_every=4)
    assert scene.val_ids == [0, 4, 8] and scene.train_ids == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    gen = torch.Generator().manual_seed(0)
    fg = scene.sample(400, 1.0, gen)
    rnd = scene.sample(400, 0.0, gen)
    assert fg["mask"].mean() > 0.8 > rnd["mask"].mean()  # foreground rays come from the (dilated) masks
    centres = scene.poses[scene.train_ids, :3, 3]
    assert (fg["rays_o"][:, None] - centres[None]).norm(dim=-1).min(1).values.max() < 1e-5  # training views only
    assert torch.allclose(fg["rays_d"].norm(dim=-1), torch.ones(400))
    assert fg["rgb"].shape == (400, 3) and fg["rgb"].min() >= 0 and fg["rgb"].max() <= 1


def test_downscaled_scene_keeps_the_rays(mug_dataset):
    full = NeusScene(mug_dataset["dataset"])
    half = NeusScene(mug_dataset["dataset"], downscale=2)
    assert half.images.shape == (12, 36, 48, 3)
    v = torch.tensor([2, 7, 11])
    y, x = torch.tensor([0, 10, 35]), torch.tensor([0, 20, 47])
    _, d_half = half.rays(v, y, x)
    _, d_full = full.rays(v, 2 * y.float() + 0.5, 2 * x.float() + 0.5)  # the centre of the 2x2 block
    torch.testing.assert_close(d_half, d_full, atol=1e-5, rtol=0)


def test_scene_errors(mug_dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(mug_dataset["dataset"], ds)
    (ds / "mask" / "004.png").rename(ds / "mask" / "004b.png")
    with pytest.raises(StageError, match="image/ and mask/ names differ"):
        NeusScene(ds)
    shutil.rmtree(ds / "mask")
    with pytest.raises(StageError, match="no masks; give masks or train with use_mask=false"):
        NeusScene(ds)
    scene = NeusScene(ds, require_masks=False)
    assert not scene.has_masks and scene.masks.all()
    with pytest.raises(StageError, match="no images"):
        NeusScene(tmp_path / "nowhere")


# ============================================================================================== trainer
@pytest.fixture(scope="module")
def trained(mug_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    cfg = resolve_config("cpu", RUN)
    metrics = train(cfg, mug_dataset["dataset"], out, hull_path=mug_dataset["hull"], bbox_path=mug_dataset["bbox"])
    return out, cfg, metrics


def _log(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_training_writes_its_outputs(trained):
    out, cfg, metrics = trained
    for name in ("checkpoint.pt", "config.yaml", "metrics.json", "train_log.csv", "renders/final.png"):
        assert (out / name).is_file(), name
    assert not (out / "ckpt" / "last.pt").exists()  # the resumable checkpoint is removed once done
    assert any((out / "tb").iterdir())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["hash"] == config_hash(cfg) and saved["steps"] == 40 and saved["preset"] == "cpu"
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    assert metrics["steps"] == 40 and metrics["device"] == "cpu" and metrics["val_view"] == "000"
    assert metrics["val_mask_iou"] > 0.5  # started from the visual hull
    panel = Image.open(out / "renders" / "final.png")
    assert panel.size == (4 * 96 // 2, 72 // 2)  # GT | colour | normals | opacity at val_downscale 2


def test_training_lowers_the_loss(trained):
    out, _, _ = trained
    rows = _log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [*range(0, 40, 5), 39]
    first = np.mean([r["color_loss"] for r in rows[:3]])
    last = np.mean([r["color_loss"] for r in rows[-3:]])
    assert last < 0.95 * first, (first, last)
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_trained_sdf_is_negative_inside_and_positive_outside(trained, mug_dataset):
    out, cfg, _ = trained
    sdf = load_sdf_function(out / "checkpoint.pt", device="cpu")
    h = np.load(mug_dataset["hull"])
    occ, lo, hi = h["occupancy"], h["bounds_min"], h["bounds_max"]
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(occ)
    deep = np.argwhere(depth >= depth.max() - 1)  # the hull's innermost voxels
    inside = torch.from_numpy(lo + (deep + 0.5) * (hi - lo) / occ.shape[0]).float()
    corners = torch.tensor([[x, y, z] for x in (-0.95, 0.95) for y in (-0.95, 0.95) for z in (-0.95, 0.95)])
    with torch.no_grad():
        assert (sdf(inside) < -0.05).all()
        assert (sdf(corners) > 0.05).all()
        values = sdf(torch.rand(2000, 3) * 2 - 1)
    assert torch.isfinite(values).all()
    model, cfg2, state = load_model(out / "checkpoint.pt", device="cpu")
    assert cfg2 == cfg and state["step"] == 40 and "optimizer" not in state
    assert int(model.sdf_net.level_mask.sum()) == cfg.n_levels  # all levels active for meshing
    color = load_color_function(out / "checkpoint.pt", device="cpu")
    with torch.no_grad():
        rgb = color(inside, torch.randn_like(inside))
    assert rgb.shape == inside.shape and ((rgb >= 0) & (rgb <= 1)).all()


def test_checkpoint_from_before_the_background_model_still_loads(trained, tmp_path):
    out, _, _ = trained
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    old = {k: v for k, v in state["config"].items() if k not in ("background", "n_outside") and not k.startswith("bg_")}
    state["config"] = {**old, "use_mask": False}  # a no-mask run saved before NeRF++ was added
    torch.save(state, tmp_path / "old.pt")
    model, cfg, _ = load_model(tmp_path / "old.pt", device="cpu")
    assert model.background is None and cfg.background == "none"


def _train_cmd(mug_dataset, out: Path, **overrides) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "neus_stage.cli",
        "train",
        "--dataset",
        str(mug_dataset["dataset"]),
        "--hull",
        str(mug_dataset["hull"]),
        "--bbox",
        str(mug_dataset["bbox"]),
        "--out",
        str(out),
        "--preset",
        "cpu",
    ]
    for k, v in {**RUN, **overrides}.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def test_sigterm_checkpoints_and_the_rerun_resumes(mug_dataset, trained, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = _train_cmd(mug_dataset, out, checkpoint_every=5, log_every=1)  # same config hash as `trained`
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last = out / "ckpt" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before its first checkpoint"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("neus-stage train: error:")]
    assert f"stopped by signal {int(signal.SIGTERM)} at step" in line and "resumed automatically" in line
    stopped_at = int(line.split(" at step ")[1].split(";")[0])
    state = torch.load(last, weights_only=False)
    assert state["step"] == stopped_at and 5 <= stopped_at < 40
    assert not (out / "checkpoint.pt").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {last} at step {stopped_at}" in rerun.stderr
    assert not last.exists()
    steps = [int(r["step"]) for r in _log(out / "train_log.csv")]
    assert steps == list(range(40))  # the log continues where it stopped: no step lost or repeated
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40
    # the generator, optimiser and occupancy state travel in the checkpoint: the resumed run reproduces the
    # uninterrupted one (up to float summation order, which Adam's tiny eps amplifies for rarely-hit entries)
    resumed = {int(r["step"]): r["color_loss"] for r in _log(out / "train_log.csv")}
    for r in _log(trained[0] / "train_log.csv"):
        assert resumed[int(r["step"])] == pytest.approx(r["color_loss"], abs=1e-3), r["step"]
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a = load_sdf_function(out / "checkpoint.pt", device="cpu")(x)
        b = load_sdf_function(trained[0] / "checkpoint.pt", device="cpu")(x)
    diff = (a - b).abs()
    assert float(diff.quantile(0.99)) < 1e-3 and float(diff.max()) < 2e-2, (
        float(diff.quantile(0.99)),
        float(diff.max()),
    )


def test_training_without_masks_renders_the_background_with_nerf_plus_plus(mug_dataset, tmp_path):
    """use_mask=false: the colour loss covers whole images. NeRF++'s background (the default then) takes
    the backdrop; without it the object has to explain the backdrop too, and the full-image PSNR stays at
    that of a black background."""
    metrics = {}
    for background in ("auto", "none"):
        cfg = resolve_config("cpu", {**RUN, "steps": 400, "use_mask": False, "background": background})
        metrics[background] = train(cfg, mug_dataset["dataset"], tmp_path / background, hull_path=mug_dataset["hull"])
    state = torch.load(tmp_path / "auto" / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    assert any(k.startswith("background.") for k in state)  # auto = nerf++ without masks, saved with the model
    assert metrics["auto"]["val_psnr"] > 20, metrics  # whole-image PSNR (the view's backdrop included)
    assert metrics["none"]["val_psnr"] < 10, metrics
    # the object did not swell into the backdrop, as it does without a background model
    assert metrics["auto"]["val_mask_iou"] > max(0.9, metrics["none"]["val_mask_iou"] + 0.05), metrics


def test_training_from_the_initial_sphere_fits_the_object(mug_dataset, tmp_path):
    """hull_prior=none starts from NeuS's sphere: the occupancy grid keeps the cells inside the surface and
    a band outside it, so the sphere can move onto the object."""
    cfg = resolve_config("cpu", {**RUN, "steps": 400, "hull_prior": "none", "level_every": 100})
    metrics = train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])
    rows = _log(tmp_path / "train_log.csv")
    assert min(r["samples"] for r in rows[len(rows) // 2 :]) > 0.5 * rows[0]["samples"]  # never starved
    assert metrics["val_mask_iou"] > 0.8, metrics


def test_divergence_is_a_stage_error(mug_dataset, tmp_path):
    cfg = resolve_config("cpu", dict(RUN, steps=10, lr=1e10, lr_mlp=1e10, warmup_steps=1))
    with pytest.raises(StageError, match="training diverged by step .*lower lr/lr_mlp"):
        train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])


def test_divergence_with_nan_opacity_is_a_stage_error(mug_dataset, tmp_path):
    cfg = resolve_config("cpu", dict(RUN, steps=10, lr=1e20, lr_mlp=1e20, warmup_steps=1))
    with pytest.raises(StageError, match="diverged"):
        train(cfg, mug_dataset["dataset"], tmp_path, hull_path=mug_dataset["hull"])


def test_device_and_backend_errors(mug_dataset, tmp_path):
    with pytest.raises(StageError, match="encoding_backend=tcnn needs a CUDA device"):
        train(resolve_config("cpu", {"encoding_backend": "tcnn", "device": "cpu"}), mug_dataset["dataset"], tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(StageError, match="device cuda was asked for but torch sees no CUDA device"):
            pick_device("cuda")
    with pytest.raises(StageError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt", device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match="not a readable checkpoint"):
        load_model(tmp_path / "junk.pt", device="cpu")


def test_initial_occupancy_is_the_dilated_hull():
    assert initial_occupancy(None, 8, CPU).all()
    occ, _ = _ball_hull(res=32, radius=0.4)
    grid = initial_occupancy(occ, 16, CPU).numpy()
    c = (np.arange(16) + 0.5) / 16 * 2 - 1
    r = np.linalg.norm(np.stack(np.meshgrid(c, c, c, indexing="ij"), -1), axis=-1)
    assert grid[r < 0.4].all()  # covers the hull
    assert not grid[r > 0.4 + 2 * math.sqrt(3) * 2 / 16].any()  # and stays within about one cell of it


def test_config_readme_lists_every_training_field_with_its_preset_values():
    from neus_stage.train.config import presets_table

    readme = (Path(__file__).parents[1] / "config" / "README.md").read_text()
    assert presets_table() in readme, "config/README.md's table is stale: regenerate it from presets_table()"
