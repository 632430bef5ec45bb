"""Writing a registry: :func:`register_local_file` records a weights file the project (or the
user) trained, with its SHA-256, size and location, keeping the JSON readable in a diff."""

import json
import os
import tempfile
from pathlib import Path

from rcnn_zoo.pretrained.integrity import file_sha256
from rcnn_zoo.pretrained.registry import REGISTRY_FORMAT, builtin_registry_path, read_json


def _format_json(value, indent=0):
    """JSON with dicts one key per line and scalar lists packed ~100 characters per line."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad} {json.dumps(k)}: {_format_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        flat = json.dumps(value, ensure_ascii=False)
        if len(flat) + indent <= 100 and not any(isinstance(v, dict) for v in value):
            return flat
        if all(not isinstance(v, (dict, list)) for v in value):
            return _packed_list(value, pad, indent)
        items = [f"{pad} {_format_json(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def _packed_list(value, pad, indent):
    """A list of scalars (class names, say) as lines of ~100 characters."""
    lines, line = [], []
    for v in value:
        text = json.dumps(v, ensure_ascii=False)
        if line and len(", ".join(line + [text])) + indent > 96:
            lines.append(", ".join(line))
            line = []
        line.append(text)
    lines.append(", ".join(line))
    return "[\n" + ",\n".join(f"{pad}  {l}" for l in lines) + "\n" + pad + "]"


def _write_json_atomically(path, data):
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
    ) as f:
        f.write(_format_json(data) + "\n")
        temporary = f.name
    os.chmod(temporary, mode)  # NamedTemporaryFile creates 0600
    os.replace(temporary, path)


def register_local_file(name, path, registry=None, **fields):
    """Record a local weights file in a registry: its SHA-256, size and location.

    Used for weights the project trains itself (``"shapes"``)::

        register_local_file("shapes", "weights/shapes_tiny.weights.h5")

    Args:
        name: registry name; an existing entry is updated, a new one needs ``model=``.
        path: the ``.weights.h5`` / ``.keras`` file. Stored relative to the registry's folder
            when inside it (portable), absolute otherwise.
        registry: registry file to update (default: the built-in ``weights/registry.json``).
        **fields: other entry fields to set (``model``, ``class_names``, ``metric``, …).

    Returns:
        The updated entry.
    """
    registry = Path(registry) if registry is not None else builtin_registry_path()
    data = read_json(registry)
    if data.get("format") != REGISTRY_FORMAT:
        raise ValueError(f"{registry} is not an rcnn_zoo weights registry")
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    entry = dict(data.setdefault("weights", {}).get(name, {}))
    entry.update(fields)
    if "model" not in entry:
        raise ValueError(
            f"new entry {name!r} needs model={{'num_classes': ..., 'backbone': ...}} "
            "(the detector's constructor arguments)"
        )
    folder = registry.resolve().parent
    try:
        entry["file"] = path.relative_to(folder).as_posix()
    except ValueError:
        entry["file"] = str(path)
    entry["sha256"] = file_sha256(path)
    entry["size"] = path.stat().st_size
    data["weights"][name] = entry
    _write_json_atomically(registry, data)
    return entry
