"""Finding and reading weights registries: ``weights/registry.json`` and the extra files named
in ``$RCNN_ZOO_WEIGHTS_REGISTRY``, and looking names up in them.

A registry is a JSON file ``{"format": "rcnn_zoo weights registry", "weights": {name: entry}}``
(fields in ``weights/README.md``). An entry names its detector class (``"detector"``, default
``FasterRCNN``) and may carry a short ``"preset"`` name under which that detector knows it.
"""

import importlib.metadata
import json
import os
import site
import sys
from pathlib import Path

REGISTRY_FORMAT = "rcnn_zoo weights registry"
REGISTRY_ENV = "RCNN_ZOO_WEIGHTS_REGISTRY"
INSTALLED_DIR = "rcnn_zoo_weights"  # setup.py data_files target under the install prefix
DEFAULT_DETECTOR = "FasterRCNN"

# rcnn_zoo/ (this file is rcnn_zoo/pretrained/registry.py)
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _is_registry(path):
    try:
        return read_json(path).get("format") == REGISTRY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _registry_candidates():
    yield _PACKAGE_DIR.parent / "weights" / "registry.json"  # source checkout / editable install
    try:
        distribution = importlib.metadata.distribution("rcnn_zoo")
        for file in distribution.files or ():
            if file.name == "registry.json" and INSTALLED_DIR in file.parts:
                yield Path(distribution.locate_file(file)).resolve()
    except importlib.metadata.PackageNotFoundError:
        pass
    user_base = getattr(site, "USER_BASE", None)
    for prefix in (sys.prefix, sys.base_prefix, user_base):
        if prefix:
            yield Path(prefix) / INSTALLED_DIR / "registry.json"


def builtin_registry_path():
    """Path of rcnn_zoo's ``registry.json``: ``weights/`` of a source checkout, else the copy
    ``pip install`` put under ``<prefix>/rcnn_zoo_weights/``."""
    looked = []
    for candidate in _registry_candidates():
        looked.append(str(candidate))
        if candidate.is_file() and _is_registry(candidate):
            return candidate
    raise FileNotFoundError(
        "rcnn_zoo's weights registry (weights/registry.json) was not found; looked in "
        f"{looked}. Reinstall rcnn_zoo (pip install .) or point ${REGISTRY_ENV} at a registry file."
    )


def _registry_files():
    files = [builtin_registry_path()]
    for extra in os.environ.get(REGISTRY_ENV, "").split(os.pathsep):
        if extra.strip():
            path = Path(extra).expanduser()
            if not path.is_file() or not _is_registry(path):
                raise FileNotFoundError(
                    f"${REGISTRY_ENV} names {path}, which is not an rcnn_zoo weights registry "
                    f'(a JSON file with "format": "{REGISTRY_FORMAT}")'
                )
            files.append(path)
    return files


def load_registry():
    """``{name: entry}`` from the built-in registry and those in ``$RCNN_ZOO_WEIGHTS_REGISTRY``.

    Each entry is a copy with ``"_registry"`` set to the file it came from (relative ``"file"``
    paths are relative to that file's folder).
    """
    entries = {}
    for path in _registry_files():
        for name, entry in read_json(path).get("weights", {}).items():
            entries[name] = {**entry, "_registry": str(path)}
    return entries


def detector_of(entry):
    """The detector class name an entry's weights are for."""
    return entry.get("detector", DEFAULT_DETECTOR)


def available_weights(detector=None):
    """Sorted registered names (for ``detector``, a class name, its preset names)."""
    registry = load_registry()
    if detector is None:
        return sorted(registry)
    return sorted(
        entry.get("preset", key) for key, entry in registry.items() if detector_of(entry) == detector
    )


def find_preset(detector, name):
    """``(registry key, entry)`` of preset ``name`` for detector class name ``detector``, or
    ``None`` when ``name`` is not a registered name (a file path, say).

    Raises ValueError when ``name`` is registered for another detector only.
    """
    registry = load_registry()
    for key, entry in registry.items():
        if detector_of(entry) == detector and entry.get("preset", key) == name:
            return key, entry
    if name in registry:
        other = detector_of(registry[name])
        short = registry[name].get("preset", name)
        raise ValueError(
            f"weights {name!r} are for {other}, not {detector}: use rcnn_zoo.{other}(weights={short!r}). "
            f"{detector} presets: {available_weights(detector)}"
        )
    return None


def unknown_preset_error(detector, weights):
    """The ValueError for ``weights`` that is neither a file nor a preset of ``detector``."""
    return ValueError(
        f"Unknown weights {weights!r} for {detector}. Registered: "
        f"{available_weights(detector)}; or pass the path of a .weights.h5 or .keras file."
    )


def get_weights_entry(name):
    """The registry entry of ``name``; an unknown name lists the registered ones."""
    registry = load_registry()
    if name not in registry:
        raise ValueError(
            f"Unknown weights {name!r}. Registered weights: {sorted(registry)}; or pass the path "
            "of a .weights.h5 or .keras file."
        )
    return registry[name]


def is_file_argument(weights):
    """Whether a ``weights=`` argument is a file path rather than a registered name."""
    weights = os.fspath(weights)
    return os.sep in weights or "/" in weights or weights.endswith((".h5", ".keras", ".pth", ".pt"))


def local_file(entry):
    """The path of an entry's ``"file"`` (relative paths are relative to its registry)."""
    path = Path(entry["file"]).expanduser()
    if not path.is_absolute():
        path = Path(entry["_registry"]).resolve().parent / path
    return path
