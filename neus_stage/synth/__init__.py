"""Synthetic test scenes with known geometry and cameras: photos, true masks, NeuS cameras, ground-truth mesh.

A scene is an analytic signed distance function (negative inside, world units) with a solid 3D albedo.
Photos are rendered by sphere tracing the SDF in numpy (vectorised over all pixels of a view), with
Lambertian shading under a key light with soft shadows plus hemisphere ambient, over a light grey studio
backdrop (or a textured table top for the ``floor`` scene). Pixels on silhouettes and depth edges are
supersampled so the photos look like real, antialiased camera images.

World units: the mug is 1.0 unit tall (think decimetres), the scene sits near, not at, the origin and is
turned about the vertical, so that every stage has to find the object's frame rather than assume it.
``z`` is up in the world.

Scenes (``SCENES``):
- ``mug``: the demo. A hollow cup (concavity), a thin wall and a thin handle, and a through hole (the
  handle loop); rich non-repeating solid texture so COLMAP and rembg work unassisted.
- ``cut``: the mug seen by close cameras that aim off-centre: the object leaves the frame in many views.
- ``parts``: three separate objects (a rounded box, a bumpy ball, a standing ring).
- ``floor``: the mug standing on a textured table top; the table is neither in the masks nor in gt.ply.
- ``teapot``: a body with a spout and a ring handle on a large textured floor, seen from two camera rings
  (25 and 50 deg elevation at slightly different distances): the floor fills much of every view, so most
  SfM points lie on it, not on the object.
- ``pot``: a deep pot (outer radius 0.9, 1.5 tall, wall 0.08) on a textured floor at z = 0, two rings at 35
  and 60 deg: a concavity no silhouette shows, and a visual hull that continues under the floor as a cone.
- ``house``: a model town (blocks with roofs, a tower) on a textured base plate that is part of the object,
  photographed from close so that it fills most of every frame (as DTU scan 24): single-image saliency
  fails there.
- ``bowl``: a wide bowl on a ring foot: its open inside is the concavity a silhouette fills.
- ``slot``: a block with a deep narrow slot cut from the top, turned 20 deg about z.
- ``vase``: a hollow vase (a surface of revolution 1.4 tall) on a textured floor, two rings at 30 and 55 deg.
- ``box``: a rounded box 0.55 tall on a textured floor, two rings: its flat top is parallel to the floor.
- ``marker``: the box with a printed ArUco marker on the floor beside it, for the metric scale.

Modules: :mod:`.sdf` (distance primitives), :mod:`.albedo` (solid textures), :mod:`.scenes` and
:mod:`.tabletop` (the scene type and builders), :mod:`.marker` (the marker scene), :mod:`.catalogue`
(``SCENES``), :mod:`.render` (cameras, sphere tracing, shading), :mod:`.scene_files` (``render_scene``,
the files it writes, and the ground-truth marching cubes).
"""

from __future__ import annotations

from .catalogue import SCENES
from .marker import MARKER_DICTIONARY, MARKER_ID, MARKER_SIDE
from .render import FOCAL_35MM
from .scene_files import render_scene, sdf_grid_mesh
from .scenes import Scene

__all__ = [
    "FOCAL_35MM",
    "MARKER_DICTIONARY",
    "MARKER_ID",
    "MARKER_SIDE",
    "SCENES",
    "Scene",
    "render_scene",
    "sdf_grid_mesh",
]
