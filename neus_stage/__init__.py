"""neus_stage: photos of an object -> NeuS dataset -> neural implicit surface -> evaluated mesh."""

# Python's zlib module loads the system libz before any pycolmap import: loaded first by pycolmap, libz's own
# internal calls bind to the zlib copy pycolmap carries, and a PNG written by OpenCV or Pillow in that process
# then crashes in deflateEnd ("free(): invalid pointer")
import zlib  # noqa: F401  (imported for that side effect)

__version__ = "0.1.0"
