"""One owner per artifact format: each module reads (validating, the error naming the file and the fix) and
writes (atomically) one family of files that stages hand to each other.

- :mod:`.box`: the object box and visual hull of the visual-hull stage (``bbox.json``, ``hull.npz``).
- :mod:`.dataset`: the NeuS dataset (``image/``, ``mask/`` with one mask rule, ``cameras_sphere.npz``,
  ``meta.json``).
- :mod:`.meshes`: meshes and point clouds (PLY/OBJ written by extension; PLY, OBJ, OFF, STL, glTF, point
  clouds read).
- :mod:`.sfm`: the cameras (and points) of the sfm stage's undistorted COLMAP model.
- :mod:`.reports`: each stage's JSON record (``report.json``, ``mesh.json``, ``eval.json``, ...).
- :mod:`.evaluation`: the official DTU evaluation files and the evaluate stage's error cloud (written and read).
- :mod:`.mesh_record`: what ``mesh.json`` says of a mesh's support (read by the evaluation).
- :mod:`.video`: videos (probing, decoding frames with PyAV) and the frames written from them.
- :mod:`.textured`: the export stage's textured mesh (GLB, OBJ + MTL + PNG), its preview, and what it reads.
"""
