"""The scene table (TSV): one row per object to reconstruct. Checked before any long work starts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import StageError
from .photos import list_photos

COLUMNS = {
    "scene": "name of the scene (results/<scene>/...), letters, digits, '-', '_'",
    "photos": "folder of photos of the object",
    "masks": "optional: folder of masks (<photo stem>.png) used instead of computed ones",
    "cameras": "optional: reference cameras_sphere.npz for the photos (evaluation aligns to it)",
    "poses": "optional: 'sfm' (default) or 'reference' (train on the reference cameras)",
    "gt": "optional: ground-truth mesh or point cloud in the reference frame",
    "dtu_scan": "optional: DTU scan number; evaluate with the DTU protocol against dtu_root",
}
REQUIRED = ("scene", "photos")


def read_scene_table(path: Path, base: Path | None = None) -> pd.DataFrame:
    """Read and check the scene table; relative paths are taken from ``base`` (the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: scene table not found; set 'scenes' in the config to a TSV file")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    except Exception as exc:  # noqa: BLE001 - pandas' parser errors become one message
        raise StageError(f"{path}: cannot read the scene table ({exc}); it must be tab-separated") from exc
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise StageError(
            f"{path}: missing column(s) {', '.join(missing)}; the header needs at least "
            f"'scene<TAB>photos' (optional: {', '.join(c for c in COLUMNS if c not in REQUIRED)})"
        )
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise StageError(f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
        df[c] = df[c].str.strip()
    if df.empty:
        raise StageError(f"{path}: the scene table has no rows; add one row per scene")
    dup = df["scene"][df["scene"].duplicated()].unique().tolist()
    if dup:
        raise StageError(f"{path}: duplicate scene name(s) {', '.join(dup)}; each row needs its own name")
    bad = [s for s in df["scene"] if not s or not all(ch.isalnum() or ch in "-_" for ch in s)]
    if bad:
        raise StageError(f"{path}: invalid scene name(s) {bad}; use letters, digits, '-' and '_'")
    df["poses"] = df["poses"].replace("", "sfm")
    base = Path(base) if base else Path.cwd()
    for row in df.itertuples():
        where = f"{path}, scene '{row.scene}'"
        if row.poses not in ("sfm", "reference"):
            raise StageError(f"{where}: poses is '{row.poses}'; write 'sfm' or 'reference'")
        if row.poses == "reference" and not row.cameras:
            raise StageError(f"{where}: poses 'reference' needs a 'cameras' file (a NeuS cameras_sphere.npz)")
        try:
            list_photos(base / row.photos)
        except StageError as exc:
            raise StageError(f"{where}: {exc}") from exc
        for col in ("masks",):
            value = getattr(row, col)
            if value and not (base / value).is_dir():
                raise StageError(f"{where}: {col} folder {value} not found")
        for col in ("cameras", "gt"):
            value = getattr(row, col)
            if value and not (base / value).is_file():
                raise StageError(f"{where}: {col} file {value} not found")
        if row.dtu_scan and not row.dtu_scan.isdigit():
            raise StageError(f"{where}: dtu_scan '{row.dtu_scan}' is not a scan number")
    return df.set_index("scene", drop=False)
