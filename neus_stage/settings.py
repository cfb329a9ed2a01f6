"""Workflow settings: where the config, the scene table and the paths in it are found, and ``--config``
values typed by the workflow's schema.

Relative paths (the config file itself, its ``scenes`` and ``dtu_root``, and every path column of the scene
table) are looked up in the working directory first and then in the workflow's own folder, so that
``snakemake -s /path/to/Snakefile -d /my/project`` finds the demo's config and photos without a
``--configfile``, while a project folder's own ``config/config.yaml`` or ``photos/`` wins where it exists.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def find_path(value: str | Path, *bases: str | Path) -> Path:
    """``value`` if absolute, else the first of ``base / value`` that exists (``bases`` in order; the current
    directory when none is given), else ``bases[0] / value`` (so that the error names where it was expected)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    roots = [Path(b) for b in bases] or [Path.cwd()]
    for root in roots:
        if (root / path).exists():
            return (root / path).resolve()
    return (roots[0] / path).absolute()


def project_file(relative: str, workflow_dir: str | Path) -> str:
    """A project file such as ``config/config.yaml``: the working directory's where it has one, else the
    workflow's."""
    return str(find_path(relative, Path.cwd(), workflow_dir))


_CASTS = {"integer": int, "number": float}
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _cast(value: object, schema: dict) -> object:
    """``value`` with the strings that ``snakemake --config`` leaves in nested values (it parses them with
    YAML's BaseLoader: everything is a string) turned into the schema's type; anything else unchanged, so
    that validation still reports real mistakes."""
    kind = schema.get("type")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            value[key] = _cast(item, sub)
        return value
    if isinstance(value, list):
        items = schema.get("items", {})
        return [_cast(v, items) for v in value]
    if not isinstance(value, str):
        return value
    if kind in _CASTS:
        try:
            number = _CASTS[kind](value)
        except ValueError:
            return value
        return number
    if kind == "boolean":
        return _BOOLEANS.get(value.strip().lower(), value)
    if kind in ("object", "array") and value.strip()[:1] in "{[":
        parsed = yaml.safe_load(value)
        return _cast(parsed, schema) if isinstance(parsed, (dict, list)) else value
    return value


def type_config(config: dict, schema_path: str | Path) -> dict:
    """Cast ``config``'s string leaves to the types of ``schema_path`` (a JSON schema in YAML), in place.

    ``snakemake --config mesh='{resolution: 512}'`` gives ``{"mesh": {"resolution": "512"}}``, which the
    schema would reject; after this it is ``{"mesh": {"resolution": 512}}``. Free-form objects (such as
    ``train.overrides``) have no types here and keep their strings; the trainer types them itself.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    _cast(config, schema)
    return config
