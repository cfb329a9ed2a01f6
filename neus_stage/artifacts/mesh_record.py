"""What the mesh stage's record ``mesh.json`` says about a mesh written beside it: whether the mesh was cut where
the object ends (at its support plane, or without the regions no camera observes), for the evaluate stage's
``eval.json``. The file is read as the report page reads it: missing or unreadable is not an error, the answer
then says so.
"""

from __future__ import annotations

from pathlib import Path

from .reports import read_report_if_any


def _support_record(meta: dict, meta_path: Path, mesh_path: Path, names: list[str]) -> dict:
    """What mesh.json's ``support`` says about the mesh ``mesh_path`` (the raw ``names[0]`` or clean ``names[1]``)."""
    sup = meta.get("support")
    if not isinstance(sup, dict):
        return {
            "cut": False,
            "method": "none",
            "meta": str(meta_path),
            "note": "written before the mesh stage cut at the support: the raw extent",
        }
    out = {"cut": bool(sup.get("cut")), "method": sup.get("method"), "how": sup.get("how"), "meta": str(meta_path)}
    vis = sup.get("visibility")
    if vis and (mesh_path.name == names[1] or sup.get("method") != "visibility"):
        out["area_removed"] = vis.get("area_removed")
        out["area_removed_share"] = vis.get("area_removed_share")
    elif vis:  # the raw mesh: the visibility cull applies to the clean mesh only
        out["cut"] = False
    if sup.get("margin_world") is not None:
        out["margin_world"] = sup["margin_world"]
    return out


def mesh_support(mesh_path: Path) -> dict:
    """Whether the mesh stage cut the mesh where the object ends (its support plane, or what no camera
    observes), from the mesh.json written beside it; ``cut`` is None where there is none."""
    mesh_path = Path(mesh_path)
    for meta_path in dict.fromkeys([mesh_path.with_suffix(".json"), mesh_path.parent / "mesh.json"]):
        meta = read_report_if_any(meta_path)
        names = [Path(str((meta.get(k) or {}).get("path", ""))).name for k in ("mesh", "mesh_clean")]
        if meta and mesh_path.name in names:
            return _support_record(meta, meta_path, mesh_path, names)
    return {"cut": None, "note": f"no mesh.json beside {mesh_path.name}: whether it was cut is unknown"}
