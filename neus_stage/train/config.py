"""Training configuration: one typed dataclass, three presets, strict overrides.

Presets:
- ``neus``: the paper's model (8x256 SDF MLP with positional encoding, skip at layer 4, geometric
  initialisation; 4x256 colour MLP; 64 + 64 hierarchical samples; 300k steps). Faithful, slow.
- ``fast``: multiresolution hash-grid SDF with tiny MLPs, progressive levels, occupancy-grid sampling,
  finite-difference normals, curvature loss; tinycudann on CUDA. Meant for a GPU.
- ``cpu``: the fast model shrunk to train in minutes on a few CPU cores (demo and tests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from ..errors import StageError


@dataclass
class TrainConfig:
    preset: str = "custom"
    """The preset this configuration started from (recorded, not an input)."""
    # ---- model
    sdf_backend: str = "hashgrid"
    """'hashgrid' (fast modes) or 'mlp' (faithful NeuS: positional encoding + 8x256 MLP)."""
    encoding_backend: str = "auto"
    """Hash-grid implementation: 'tcnn' (tinycudann, CUDA), 'torch' (pure torch, any device) or 'auto'."""
    n_levels: int = 16
    """Hash-grid levels."""
    features_per_level: int = 2
    """Features stored per level."""
    log2_hashmap_size: int = 19
    """log2 of the hash-table entries per level."""
    base_resolution: int = 16
    """Coarsest grid resolution."""
    finest_resolution: int = 2048
    """Finest grid resolution (sets the per-level scale)."""
    start_levels: int = 4
    """Levels active at step 0 (progressive activation)."""
    level_every: int = 500
    """Steps between activating one more level."""
    sdf_hidden: int = 64
    """Width of the SDF MLP (hash grid) or 256 (mlp)."""
    sdf_layers: int = 1
    """Hidden layers of the SDF MLP."""
    feature_dim: int = 15
    """Geometry feature passed from the SDF network to the colour network."""
    color_hidden: int = 64
    """Width of the colour MLP."""
    color_layers: int = 2
    """Hidden layers of the colour MLP."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the view-direction encoding (hash grid); 0 = view-independent."""
    multires: int = 6
    """Positional-encoding frequencies of the point (mlp backend)."""
    multires_view: int = 4
    """Positional-encoding frequencies of the view direction (mlp backend)."""
    skip_layers: tuple[int, ...] = (4,)
    """Skip connections of the SDF MLP (mlp backend)."""
    init_radius: float = 0.5
    """Radius of the initial sphere (geometric initialisation), in the normalised frame."""
    hull_prior: str = "none"
    """Hash grid: what the SDF starts from. 'outside': the visual hull's distance outside it and zero inside,
    so the hull bounds the object (where the masks say it is not) and the photos decide what fills it (a
    concavity the silhouettes fill in is carved); 'full': the hull's whole signed distance, a solid start;
    'none': NeuS's initial sphere. The hull bounds the box and seeds the occupancy grid either way."""
    hull_prior_warmup: int = 0
    """With hull_prior=outside: steps at the start during which the whole hull is the prior (a solid start, so
    a short run still ends with a closed surface); then its inside is dropped at once."""
    hull_fill_unseen: bool = True
    """With hull_prior=outside: after training, the cells that no training camera sees into (behind every
    visible surface of the trained model: transmittance below 0.5 in them from every view) get the hull's
    inside back, so what no photo shows stays solid instead of the network's guess (hollows inside solid
    parts, floaters' shadows). Saved with the model; the mesh stage sees it."""
    hull_prior_fade: int = 0
    """With hull_prior=full: steps over which its inside fades to zero, ending as 'outside' (0: it stays)."""
    init_variance: float = 0.3
    """Initial value of NeuS's learned variance (inv_s = exp(10 * variance))."""
    background: str = "auto"
    """Background outside the object box: 'nerf++' (NeRF++'s inverted-sphere model, as NeuS without masks),
    'none' (the object is rendered alone) or 'auto' (nerf++ when use_mask is false, else none)."""
    n_outside: int = 32
    """Background samples per ray, from the box's far side to infinity (uniform in inverse depth)."""
    bg_hidden: int = 256
    """Width of the background MLP."""
    bg_layers: int = 8
    """Layers of the background MLP before the density head (skip connection half way)."""
    bg_multires: int = 10
    """Positional-encoding frequencies of the background's (x/r, 1/r) input."""
    bg_multires_view: int = 4
    """Positional-encoding frequencies of the view direction in the background model."""
    # ---- sampling and rendering
    n_rays: int = 512
    """Rays per step (the starting count when sample_budget > 0)."""
    n_samples: int = 64
    """Uniform samples per ray between near and far."""
    n_importance: int = 0
    """Hierarchical up-samples per ray (faithful NeuS: 64 in 4 steps)."""
    up_sample_steps: int = 4
    """Rounds of hierarchical up-sampling."""
    sample_budget: int = 0
    """Target evaluated samples per step; the ray count adapts to it (0: fixed n_rays)."""
    max_rays: int = 8192
    """Upper bound on the adaptive ray count."""
    use_occupancy: bool = True
    """Skip samples in empty cells of an occupancy grid (initialised from the visual hull)."""
    occupancy_resolution: int = 128
    """Cells per axis of the occupancy grid."""
    occupancy_every: int = 16
    """Steps between occupancy-grid updates."""
    occupancy_threshold: float = 0.01
    """A cell is occupied while its remembered NeuS alpha over one render step exceeds this (or the grid's
    mean, if lower). Inside the surface alpha is near 1, so the inside is never skipped."""
    occupancy_decay: float = 0.95
    """Each update multiplies a cell's remembered alpha by this before taking the maximum with the new one."""
    occupancy_warmup: int = 256
    """Updates within the first this many steps evaluate every cell; later ones a random quarter of the
    cells plus every occupied cell."""
    early_stop_eps: float = 1e-4
    """Skip samples behind which the ray is opaque (transmittance below this, from a gradient-free SDF pass)
    and, with alpha_thre, samples that add no opacity; 0: evaluate every sample in occupied cells."""
    alpha_thre: float = 0.0
    """Skip samples whose estimated alpha is below this (0: keep them)."""
    normals: str = "finite_difference"
    """'analytic' (double backward) or 'finite_difference' (step tied to the active grid level)."""
    foreground_share: float = 0.5
    """Share of rays drawn from inside the (dilated) masks; the rest uniformly."""
    holdout_every: int = 0
    """Hold out every k-th view from training for validation (0: train on all views)."""
    # ---- losses
    use_mask: bool = True
    """Use the masks (mask loss, colour loss on the object only)."""
    mask_weight: float = 0.1
    """Weight of the mask (opacity) BCE loss."""
    eikonal_weight: float = 0.1
    """Weight of the eikonal loss (on the rendered samples and on eikonal_points random points in the box)."""
    eikonal_points: int = 0
    """Random points in the box per step for the eikonal loss, so that cells no ray samples stay a distance."""
    curvature_weight: float = 0.0
    """Weight of the curvature (Laplacian) loss at start_levels; finite-difference normals only. Divided by
    the per-level scale for each level activated after those, as the finite-difference step shrinks
    (Neuralangelo)."""
    curvature_warmup: int = 500
    """Steps over which the curvature weight ramps up."""
    point_weight: float = 0.0
    """Weight of the point terms (scene_points.py): abs(sdf) at the scene's 3-D points (hull.npz's: SfM points,
    or points triangulated with reference cameras) inside the visual hull and off the support plane, as
    Geo-NeuS's explicit SDF supervision, and relu(-sdf) on the lines of sight from SfM points to the training
    views that observe them. The photos' own stereo pins the surface where the colour loss alone is slow to
    carve, such as the inside of a deep cup (0: off). Every holdout_every-th point is left to the quality
    check."""
    point_batch: int = 256
    """Surface points and line-of-sight spots drawn per step for the point terms."""
    sweep_pixels: int = 0
    """Mask pixels per training view from which a plane sweep over the photos (sweep.py: patch NCC against
    the nearest training views) adds dense points to the point terms, each with the views that agree on it,
    so the free-space term clears their lines of sight; 0: the hull's points only. Needs point_weight > 0."""
    sweep_sources: int = 4
    """Training views each sweep pixel is matched against (the nearest by viewing direction; the best half
    of them counts, so an occluded view does not)."""
    sweep_radius: int = 2
    """Half the side of the sweep's patch, in training pixels (2: 5x5)."""
    # ---- optimisation
    steps: int = 20000
    """Training steps."""
    lr: float = 1e-2
    """Learning rate of the encoding (hash grid) or of every parameter (mlp)."""
    lr_mlp: float = 1e-3
    """Learning rate of the MLPs (hash grid)."""
    lr_variance: float = 1e-3
    """Learning rate of NeuS's variance (its own parameter group, as instant-nsr-pl)."""
    warmup_steps: int = 500
    """Linear learning-rate warm-up."""
    lr_alpha: float = 0.05
    """Final learning rate as a share of the initial one (cosine decay)."""
    anneal_end: int = 0
    """Steps of cosine annealing of the NeuS cos term when training with masks (0: none, as NeuS's mask
    configs)."""
    anneal_end_no_mask: int = 50000
    """Steps of cosine annealing of the NeuS cos term without masks (use_mask=false; NeuS: 50k)."""
    # ---- run
    device: str = "auto"
    """'cuda', 'cpu' or 'auto'."""
    precision: str = "auto"
    """'fp32', 'fp16' or 'bf16' (autocast of the hash encoding, on CUDA and on the CPU; the MLPs and the
    geometry stay fp32), or 'auto': fp16 where the encoding is tinycudann's, else fp32."""
    seed: int = 0
    """Random seed."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    max_minutes: float = 0.0
    """Time budget in minutes (0: none): the learning-rate, level and annealing schedules are compressed to
    the steps that fit, measured as training goes, and training stops at the budget; the step reached is
    recorded."""
    checkpoint_every: int = 1000
    """Steps between resumable checkpoints (also written on SIGTERM/SIGINT)."""
    validate_every: int = 2000
    """Steps between validation renders (colour and normals of a view)."""
    val_downscale: int = 4
    """Downscale of validation renders."""
    log_every: int = 50
    """Steps between log rows (train_log.csv, TensorBoard where installed); the only steps that wait for
    the device (losses, PSNR and the finiteness check are read there)."""
    image_downscale: int = 1
    """Train on images downscaled by this factor (right and bottom edges cropped to a multiple of it)."""


PRESETS: dict[str, dict] = {
    "neus": dict(
        sdf_backend="mlp",
        sdf_hidden=256,
        sdf_layers=8,
        feature_dim=256,
        color_hidden=256,
        color_layers=4,
        n_rays=512,
        n_samples=64,
        n_importance=64,
        use_occupancy=False,
        normals="analytic",
        steps=300000,
        lr=5e-4,
        lr_mlp=5e-4,
        lr_variance=5e-4,
        warmup_steps=5000,
        anneal_end=0,
        anneal_end_no_mask=50000,
        early_stop_eps=0.0,
        validate_every=10000,
        checkpoint_every=5000,
        sh_degree=0,
    ),
    "fast": dict(
        sdf_backend="hashgrid",
        n_levels=16,
        log2_hashmap_size=19,
        base_resolution=32,
        finest_resolution=2048,
        start_levels=4,
        level_every=1000,
        sample_budget=2**18,
        n_rays=4096,
        n_samples=256,
        hull_prior="outside",
        occupancy_resolution=128,
        curvature_weight=5e-4,
        eikonal_points=4096,
        point_weight=1.0,
        point_batch=4096,
        sweep_pixels=2000,
        steps=20000,
        lr=1e-2,
        lr_mlp=1e-2,
        anneal_end=0,
        anneal_end_no_mask=2000,
        warmup_steps=500,
        checkpoint_every=2000,
        validate_every=5000,
        bg_hidden=128,
        bg_layers=4,
    ),
    "cpu": dict(
        sdf_backend="hashgrid",
        encoding_backend="torch",
        n_levels=10,
        log2_hashmap_size=15,
        base_resolution=16,
        finest_resolution=256,
        start_levels=4,
        level_every=200,
        features_per_level=2,
        sdf_hidden=32,
        color_hidden=32,
        sh_degree=3,
        n_rays=256,
        n_samples=48,
        sample_budget=0,
        hull_prior="outside",
        occupancy_resolution=64,
        occupancy_every=50,
        curvature_weight=5e-4,
        curvature_warmup=300,
        eikonal_points=256,
        point_weight=1.0,
        point_batch=256,
        sweep_pixels=500,
        steps=2000,
        lr=1e-2,
        lr_mlp=5e-3,
        warmup_steps=100,
        anneal_end=0,
        anneal_end_no_mask=500,
        checkpoint_every=500,
        validate_every=1000,
        val_downscale=2,
        bg_hidden=64,
        bg_layers=4,
        n_outside=16,
    ),
}


def _coerce(name: str, current: object, value: object) -> object:
    """Convert a command-line string (or JSON value) to the type of the field's default."""
    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise StageError(f"training option {name}={value!r}: not a valid value") from exc
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise StageError(f"training option {name}: expected true/false, got {value!r}")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise StageError(f"training option {name}: expected an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise StageError(f"training option {name}: expected a number, got {value!r}")
        return float(value)
    if isinstance(current, tuple):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return value


def resolve_config(preset: str = "auto", overrides: dict | None = None, cuda: bool | None = None) -> TrainConfig:
    """The preset's config with ``overrides`` applied; unknown keys and ill-typed values are errors."""
    if preset == "auto":
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        preset = "fast" if cuda else "cpu"
    if preset not in PRESETS:
        raise StageError(f"unknown training preset '{preset}'; choose one of {', '.join(PRESETS)} or auto")
    cfg = TrainConfig(**PRESETS[preset])
    known = {f.name for f in fields(TrainConfig)} - {"preset"}
    for key, value in (overrides or {}).items():
        if key not in known:
            close = sorted(k for k in known if key.split("_")[0] in k)[:5]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise StageError(
                f"unknown training option '{key}'{hint}; see `neus-stage train --help` and config/README.md"
            )
        setattr(cfg, key, _coerce(key, getattr(cfg, key), value))
    for key, allowed in (
        ("sdf_backend", ("hashgrid", "mlp")),
        ("encoding_backend", ("auto", "tcnn", "torch")),
        ("normals", ("analytic", "finite_difference")),
        ("precision", ("auto", "fp32", "fp16", "bf16")),
        ("background", ("auto", "none", "nerf++")),
        ("hull_prior", ("outside", "full", "none")),
    ):
        if getattr(cfg, key) not in allowed:
            raise StageError(f"training option {key}={getattr(cfg, key)!r}: choose one of {', '.join(allowed)}")
    cfg.preset = preset
    return cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["steps=100", "lr=0.01"]`` -> ``{"steps": "100", "lr": "0.01"}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise StageError(f"--set {item!r}: write KEY=VALUE, e.g. --set steps=500")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def field_docs() -> dict[str, str]:
    """Each TrainConfig field's docstring (the string under it in the class body), read from the source."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(TrainConfig)).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def presets_table() -> str:
    """The Markdown table of config/README.md: every field's value in each preset and its meaning."""

    def show(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else str(list(v)) if isinstance(v, tuple) else str(v)

    names = ["cpu", "fast", "neus"]
    cfgs = {n: TrainConfig(**PRESETS[n]) for n in names}
    rows = ["| field | " + " | ".join(names) + " | meaning |", "|---|" + "---|" * len(names) + "---|"]
    for name, doc in field_docs().items():
        if name != "preset":
            values = " | ".join(show(getattr(cfgs[n], name)) for n in names)
            rows.append(f"| `{name}` | {values} | {doc} |")
    return "\n".join(rows)


def config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["skip_layers"] = list(cfg.skip_layers)
    return d


def config_hash(cfg: TrainConfig) -> str:
    """Identifies the training problem: a checkpoint resumes only into a run with the same hash."""
    d = config_dict(cfg)
    for key in ("checkpoint_every", "validate_every", "log_every", "max_minutes", "threads", "val_downscale"):
        d.pop(key, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
