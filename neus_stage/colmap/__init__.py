"""The pycolmap steps of the sfm stage (:mod:`neus_stage.sfm`), each a plain function of COLMAP's database or model.

- :mod:`.runtime`: importing pycolmap, routing COLMAP's log lines into ``logging``, the device, the progress of
  a call that writes to the database.
- :mod:`.features`: the working image size, SIFT feature extraction and its check.
- :mod:`.matching`: the matcher and its image pairs, feature matching and its check.
- :mod:`.mapping`: the mapper, and the bundle adjustments that refine the intrinsics.
"""
