"""The scene table (TSV): one row per object to reconstruct. Checked before any long work starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .errors import StageError
from .photos import VIDEO_SUFFIXES, list_photos
from .settings import find_path

COLUMNS = {
    "scene": "name of the scene (results/<scene>/...), letters, digits, '-', '_'",
    "photos": "folder of photos of the object, or a video file of it (mp4, mov, mkv, avi)",
    "masks": "optional: folder of masks (<photo stem>.png) used instead of computed ones",
    "cameras": "optional: reference cameras_sphere.npz for the photos (evaluation aligns to it)",
    "poses": "optional: 'sfm' (default) or 'reference' (train on the reference cameras)",
    "gt": "optional: ground-truth mesh or point cloud in the reference frame",
    "dtu_scan": "optional: DTU scan number; evaluate with the DTU protocol against dtu_root",
}
REQUIRED = ("scene", "photos")
PATH_COLUMNS = ("photos", "masks", "cameras", "gt")


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the table's non-blank lines. Only a line that starts with ``#`` is a comment:
    a ``#`` inside a field (a folder named ``shoot #2``) is part of it. Empty fields after the last column (a
    trailing tab) are dropped; a non-empty field beyond the header is an error naming the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: cannot read the scene table ({exc}); it must be a tab-separated text file") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rows.append((number, [f.strip() for f in line.rstrip("\r\n").split("\t")]))
    if not rows:
        raise StageError(f"{path}: the scene table is empty; write a header 'scene<TAB>photos' and one row per scene")
    width = len(rows[0][1])
    header_line = rows[0][0]
    while width > 1 and rows[0][1][width - 1] == "":
        width -= 1  # a trailing tab after the header
    out = []
    for number, fields in rows:
        extra = [f for f in fields[width:] if f]
        if extra:
            raise StageError(
                f"{path}, line {number}: {len(fields)} fields but the header (line {header_line}) has {width} "
                f"columns (extra: {', '.join(extra[:3])}); separate columns by single tabs and give every column "
                "a header"
            )
        fields = fields[:width] + [""] * (width - len(fields))
        out.append((number, fields))
    first = rows[0][1][0]
    if width == 1 and ("," in first or " " in first.strip()):
        raise StageError(
            f"{path}: the header '{rows[0][1][0]}' is one column; the scene table must be tab-separated "
            "(scene<TAB>photos...), not commas or spaces"
        )
    return out


def _table_frame(path: Path, rows: list[tuple[int, list[str]]]) -> pd.DataFrame:
    """The table's rows under its header, every column of :data:`COLUMNS` present (empty where not given) and
    stripped; a StageError for missing or unknown columns."""
    header = rows[0][1]
    df = (
        pd.DataFrame([f for _, f in rows[1:]], columns=header, dtype=str)
        if len(rows) > 1
        else pd.DataFrame(columns=header, dtype=str)
    )
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
    return df


def _check_scene_names(path: Path, df: pd.DataFrame) -> None:
    """A StageError for a table without rows, or with duplicate or invalid scene names."""
    if df.empty:
        raise StageError(f"{path}: the scene table has no rows; add one row per scene")
    dup = df["scene"][df["scene"].duplicated()].unique().tolist()
    if dup:
        raise StageError(f"{path}: duplicate scene name(s) {', '.join(dup)}; each row needs its own name")
    bad = [s for s in df["scene"] if not s or not all(ch.isalnum() or ch in "-_" for ch in s)]
    if bad:
        raise StageError(f"{path}: invalid scene name(s) {bad}; use letters, digits, '-' and '_'")


def _check_photos(where: str, row, photos: Path) -> None:
    """A StageError unless ``photos`` (the row's resolved photos) is a video that decodes, with neither
    reference poses nor masks, or a folder of photos."""
    if photos.is_file() and photos.suffix.lower() in VIDEO_SUFFIXES:
        # a video: the frames stage picks its frames; here only that it decodes, and what cannot go with it
        if row.poses == "reference" or row.masks:
            raise StageError(
                f"{where}: photos names a video ({row.photos}), whose frames are chosen by the frames stage, so "
                f"{'reference cameras' if row.poses == 'reference' else 'a masks folder'} cannot be matched to "
                "them; leave 'poses' (sfm) and 'masks' empty for a video, or give a folder of photos instead"
            )
        from .video import probe_video

        try:
            probe_video(photos)
        except StageError as exc:
            raise StageError(f"{where}: {exc}") from exc
    elif photos.is_file():
        raise StageError(
            f"{where}: photos names the file {row.photos}, neither a folder of photos nor a video "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}); name the folder that holds the photos"
        )
    else:
        try:
            list_photos(photos)
        except StageError as exc:
            raise StageError(f"{where}: {exc}") from exc


def _checked_paths(path: Path, row, roots: list[Path]) -> dict[str, str]:
    """The row's path columns resolved against ``roots`` (absolute; empty where not given), after checking the
    row: its poses, photos, masks folder, files and DTU scan number."""
    where = f"{path}, scene '{row.scene}'"
    if row.poses not in ("sfm", "reference"):
        raise StageError(f"{where}: poses is '{row.poses}'; write 'sfm' or 'reference'")
    if row.poses == "reference" and not row.cameras:
        raise StageError(f"{where}: poses 'reference' needs a 'cameras' file (a NeuS cameras_sphere.npz)")
    resolved = {col: str(find_path(getattr(row, col), *roots)) if getattr(row, col) else "" for col in PATH_COLUMNS}
    _check_photos(where, row, Path(resolved["photos"]))
    for col in ("masks",):
        value = getattr(row, col)
        if value and not Path(resolved[col]).is_dir():
            raise StageError(f"{where}: {col} folder {value} not found")
    for col in ("cameras", "gt"):
        value = getattr(row, col)
        if value and not Path(resolved[col]).is_file():
            raise StageError(f"{where}: {col} file {value} not found")
    if row.dtu_scan and not row.dtu_scan.isdigit():
        raise StageError(f"{where}: dtu_scan '{row.dtu_scan}' is not a scan number")
    return resolved


def read_scene_table(path: Path, base: Path | None = None, *, bases: Sequence[Path] | None = None) -> pd.DataFrame:
    """Read and check the scene table; every path column comes back absolute.

    Relative paths are looked up in ``bases`` in order (the workflow passes the working directory, then its
    own folder, where the demo's photos are; see :mod:`neus_stage.settings`), by default ``base`` or the
    working directory.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: scene table not found; set 'scenes' in the config to a TSV file")
    df = _table_frame(path, _rows(path))
    _check_scene_names(path, df)
    df["poses"] = df["poses"].replace("", "sfm")
    roots = [Path(b) for b in (bases or [base or Path.cwd()])]
    for i, row in enumerate(df.itertuples()):
        for col, value in _checked_paths(path, row, roots).items():
            df.iloc[i, df.columns.get_loc(col)] = value
    return df.set_index("scene", drop=False)
