"""A stand-in for neus_stage.train.checkpoint in tests of the stages that read a trained field (mesh)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable


def install_fake_fields(monkeypatch, load_sdf: Callable, load_color: Callable | None = None) -> None:
    """``neus_stage.train.checkpoint.load_fields`` answers with ``load_sdf(checkpoint, device)`` and
    ``load_color(checkpoint, device)`` (None: a field without a colour network)."""
    mod = types.ModuleType("neus_stage.train.checkpoint")

    def load_fields(checkpoint, device):
        color = None if load_color is None else load_color(checkpoint, device)
        return load_sdf(checkpoint, device), color

    mod.load_fields = load_fields
    monkeypatch.setitem(sys.modules, "neus_stage.train.checkpoint", mod)
