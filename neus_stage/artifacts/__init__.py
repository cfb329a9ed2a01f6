"""One owner per artifact format: each module reads (validating, the error naming the file and the fix) and
writes (atomically) one family of files that stages hand to each other.

- :mod:`.box`: the object box and visual hull of the visual-hull stage (``bbox.json``, ``hull.npz``).
"""
