"""The rembg model of the masks stage: where its file lies, a session loaded offline from there (never from
the internet), and the foreground probabilities it gives each image."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import StageError
from .photos import read_photo
from .progress import track

MODELS_ENV = "NEUS_STAGE_MODELS"


def models_dir() -> Path:
    """The folder holding ``<name>/<name>.onnx`` model files (``$NEUS_STAGE_MODELS`` or the project's ``.models``)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / ".models"


def model_path(model: str) -> Path:
    """The model file of rembg model ``model``."""
    return models_dir() / model / f"{model}.onnx"


@contextlib.contextmanager
def offline_rembg(model: str):
    """Point rembg at the model file and make any download attempt a StageError.

    rembg 2.0.86 looks for ``<U2NET_HOME>/models/<name>/<name>.onnx`` and then the legacy
    ``<U2NET_HOME>/<name>.onnx`` (``U2NET_HOME`` wins over ``REMBG_HOME``); setting ``U2NET_HOME`` to
    ``<models>/<name>`` makes the second one our ``<models>/<name>/<name>.onnx``. When it finds no file it
    calls ``pooch.retrieve`` to download one: that is replaced for the duration by an error.
    """
    import pooch

    def refuse(*args, **kwargs):
        raise StageError(f"model {model} not installed (rembg wanted to download it): run `make setup`")

    saved_env = {k: os.environ.get(k) for k in ("U2NET_HOME", "REMBG_HOME")}
    saved_retrieve = pooch.retrieve
    os.environ["U2NET_HOME"] = str(model_path(model).parent)
    os.environ.pop("REMBG_HOME", None)
    pooch.retrieve = refuse
    try:
        yield
    finally:
        pooch.retrieve = saved_retrieve
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rembg_session(model: str = "u2netp"):
    """A rembg session for ``model`` loaded from the project's model folder, never from the internet."""
    path = model_path(model)
    if not path.is_file():
        raise StageError(
            f"model {model} not installed ({path} is missing): run `make setup` "
            f"(or set {MODELS_ENV} to a folder holding {model}/{model}.onnx)"
        )
    with offline_rembg(model):
        from rembg import new_session  # first import compiles numba code once (about a minute)

        try:
            return new_session(model)
        except ValueError as exc:
            raise StageError(f"rembg has no model named '{model}' ({exc}); the default is u2netp") from exc


def rembg_probabilities(session, images: dict[str, Path]) -> dict[str, np.ndarray]:
    """Per image (by stem), rembg's foreground probability as uint8 0..255 (a quarter of float32's memory)."""
    probs = {}
    for stem, path in track(list(images.items()), "rembg", unit="views"):
        img = Image.fromarray(read_photo(path))
        (mask,) = session.predict(img)[:1]
        probs[stem] = np.asarray(mask.convert("L"), dtype=np.uint8)
    return probs
