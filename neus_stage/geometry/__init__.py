"""Pure geometry: arrays (and callables) in, arrays out; no files, no stage logic.

- :mod:`.support`: the support surface an object stands on (a RANSAC plane of the scene's points, with
  an up prior from the cameras).
"""

from .support import SupportPlane, SupportSearch, find_support, fit_support_plane, up_prior

__all__ = ["SupportPlane", "SupportSearch", "find_support", "fit_support_plane", "up_prior"]
