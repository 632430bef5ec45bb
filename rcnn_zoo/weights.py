"""Pretrained detector weights: by registered name (a preset), or from a weights file.

    model = rcnn_zoo.FasterRCNN(weights="coco")                  # the source model, exactly
    model = rcnn_zoo.FasterRCNN.from_preset("voc", score_threshold=0.5)   # the same, documented
    model = rcnn_zoo.FasterRCNN(weights="voc", num_classes=5)   # fine-tuning start
    model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny", weights="run/best.weights.h5")

A registered name is a *preset*: the entry's ``model`` arguments (class count, backbone and
every hyperparameter of the source's pre- and post-processing) and class names build the
model, and the caller's arguments override them. An override that changes the architecture
(backbone, layer widths, anchors per location) is refused naming the argument; a different
``num_classes`` loads everything but the class-specific predictor. Each entry names its
detector class (``"detector"``, default ``FasterRCNN``) and may be registered under another
key with ``"preset"`` as its short name (``FastRCNN(weights="coco")`` is entry
``fast_rcnn_coco``).

Names live in ``weights/registry.json`` (data, not code; fields in ``weights/README.md``): the
detector's constructor arguments, class names, preprocessing, the file's URL, SHA-256 (full or
the published 8-digit prefix), licence and the metric it reaches. A named entry is

1. checked against the model (same backbone and layer sizes; a warning lists behaviour
   settings that differ from those the published metric was measured with);
2. fetched with ``keras.utils.get_file`` into ``<cache>/rcnn_zoo/`` (cache: ``cache_dir=``,
   else ``$RCNN_ZOO_CACHE_DIR``, else Keras' ``~/.keras``) and its SHA-256 verified;
3. if it is a PyTorch checkpoint (``"convert"`` field), converted once with
   :mod:`rcnn_zoo.convert` and the result cached next to it as ``*.weights.h5``;
4. loaded like a file (below).

A file is loaded with ``model.load_weights``. When its detector has a different ``num_classes``
(fine-tuning), everything except the class-specific predictor (``box_predictor/cls_score``,
``box_predictor/bbox_pred``) is loaded and a warning names the layers left initialised;
``strict=True`` refuses instead. ``FasterRCNN(weights=...)`` is non-strict; call
:func:`load_detector_weights` yourself for ``strict=True``. A file that is empty, truncated or
otherwise damaged is refused with :class:`WeightsFileError` naming it (:func:`check_weights_file`).

A hash mismatch of a download says to delete the download and try again; of a registered local
file (``"file"``, the user's own), that it is not the file registered, and how to register it
again (:func:`register_local_file`).

Extra registries (JSON files of the same format, entries override the built-in ones by name)
can be listed in ``$RCNN_ZOO_WEIGHTS_REGISTRY`` (``os.pathsep``-separated).
"""

import hashlib
import importlib.metadata
import json
import os
import site
import sys
import tempfile
import urllib.parse
import warnings
import zipfile
import zlib
from pathlib import Path

import keras

from rcnn_zoo import convert
from rcnn_zoo.errors import UsageError
from rcnn_zoo.layers import AnchorGenerator

__all__ = [
    "WeightsDownloadError",
    "WeightsFileError",
    "WeightsIntegrityError",
    "WeightsMismatchError",
    "available_weights",
    "find_preset",
    "preset_arguments",
    "builtin_registry_path",
    "check_weights_file",
    "checkpoint_num_classes",
    "file_sha256",
    "get_weights_entry",
    "load_detector_weights",
    "load_registry",
    "load_weights_file",
    "register_local_file",
    "weights_file",
]

REGISTRY_FORMAT = "rcnn_zoo weights registry"
REGISTRY_ENV = "RCNN_ZOO_WEIGHTS_REGISTRY"
CACHE_DIR_ENV = "RCNN_ZOO_CACHE_DIR"
CACHE_SUBDIR = "rcnn_zoo"
INSTALLED_DIR = "rcnn_zoo_weights"  # setup.py data_files target under the install prefix
CONVERT_FORMAT_VERSION = 1  # bump when converters change, to invalidate cached conversions

# Layers whose shape depends on num_classes (left initialised when fine-tuning).
PREDICTOR_PREFIXES = ("box_predictor/",)
# Hyperparameters that change variable shapes: a mismatch cannot load at all.
STRUCTURAL_KEYS = (
    "rpn_head_channels", "roi_head_dim", "roi_pool_size", "rpn_conv_depth", "roi_head_type", "roi_head_convs",
)
# Hyperparameters that change what the weights compute at inference (warned about).
BEHAVIOUR_KEYS = (
    "image_min_size",
    "image_max_size",
    "anchor_sizes",
    "anchor_aspect_ratios",
    "anchor_style",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_test",
    "rpn_nms_threshold",
    "rpn_min_size",
    "roi_pooling",
    "roi_sampling_ratio",
    "roi_levels",
    "roi_box_weights",
)


class WeightsDownloadError(RuntimeError):
    """A registered weights file could not be downloaded (the message names the URL)."""


class WeightsIntegrityError(ValueError):
    """A weights file's SHA-256 differs from the registry's (expected, got and path named)."""


class WeightsMismatchError(ValueError):
    """Weights that do not fit the model (backbone, layer sizes, or classes with strict=True)."""


class WeightsFileError(UsageError, OSError, ValueError):
    """A ``.weights.h5`` / ``.keras`` file that cannot be read: empty, truncated or otherwise
    damaged (not a valid HDF5 file / zip archive), or not readable. The message names the file;
    ``path`` holds it.

    An :class:`OSError` (what h5py and zipfile raise for such files) and a :class:`ValueError`
    (like the other weights errors), and a :class:`rcnn_zoo.errors.UsageError`, so that
    ``rcnn-zoo`` prints it as one line.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------------------- registry
def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _is_registry(path):
    try:
        return _read_json(path).get("format") == REGISTRY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _registry_candidates():
    package_dir = Path(__file__).resolve().parent
    yield package_dir.parent / "weights" / "registry.json"  # source checkout / editable install
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
        for name, entry in _read_json(path).get("weights", {}).items():
            entries[name] = {**entry, "_registry": str(path)}
    return entries


def _detector_of(entry):
    return entry.get("detector", "FasterRCNN")


def available_weights(detector=None):
    """Sorted registered names (for ``detector``, a class name, its preset names)."""
    registry = load_registry()
    if detector is None:
        return sorted(registry)
    return sorted(
        entry.get("preset", key) for key, entry in registry.items() if _detector_of(entry) == detector
    )


def find_preset(detector, name):
    """``(registry key, entry)`` of preset ``name`` for detector class name ``detector``, or
    ``None`` when ``name`` is not a registered name (a file path, say).

    Raises ValueError when ``name`` is registered for another detector only.
    """
    registry = load_registry()
    for key, entry in registry.items():
        if _detector_of(entry) == detector and entry.get("preset", key) == name:
            return key, entry
    if name in registry:
        other = _detector_of(registry[name])
        short = registry[name].get("preset", name)
        raise ValueError(
            f"weights {name!r} are for {other}, not {detector}: use rcnn_zoo.{other}(weights={short!r}). "
            f"{detector} presets: {available_weights(detector)}"
        )
    return None


def _is_file_argument(weights):
    weights = os.fspath(weights)
    return os.sep in weights or "/" in weights or weights.endswith((".h5", ".keras", ".pth", ".pt"))


def preset_arguments(detector, weights, given):
    """Constructor arguments of a detector built with ``weights=weights``.

    Args:
        detector: the detector's class name (``"FasterRCNN"``, ``"FastRCNN"``, …).
        weights: ``None``, a file path or a preset name.
        given: ``{argument: value}`` the caller passed (``None`` values already removed where
            ``None`` means "not given").
    Returns:
        ``given`` on top of the preset's arguments and class names (those only when the class
        count is the preset's); ``given`` itself when ``weights`` is no preset.
    Raises:
        ValueError: ``weights`` names no preset of ``detector`` (the message lists them).
        WeightsMismatchError: an override changes the architecture (named in the message).
    """
    if weights is not None and os.fspath(weights).endswith(".keras") and os.path.isfile(weights):
        return _keras_file_arguments(detector, os.fspath(weights), given)
    if weights is None or _is_file_argument(weights):
        return dict(given)
    found = find_preset(detector, os.fspath(weights))
    if found is None:
        raise ValueError(
            f"Unknown weights {weights!r} for {detector}. Registered: "
            f"{available_weights(detector)}; or pass the path of a .weights.h5 or .keras file."
        )
    key, entry = found
    preset = dict(entry["model"])
    _refuse_architecture_changes(detector, weights, preset, given)
    arguments = dict(preset)
    same_classes = given.get("num_classes", preset["num_classes"]) == preset["num_classes"]
    if entry.get("class_names") and same_classes:
        arguments["class_names"] = list(entry["class_names"])
    arguments.update(given)
    return arguments


def _keras_file_arguments(detector, path, given):
    """Constructor arguments of ``detector(weights=path)`` for a ``.keras`` file: the file's own
    configuration (a model saved with ``model.save`` is its own preset: backbone, anchors,
    image sizes, class names), then ``given``."""
    check_weights_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise WeightsFileError(f"cannot read weights file {path}: no readable config.json inside "
                               f"({type(error).__name__}: {error}); {DAMAGED_ADVICE}", path) from error
    kind = saved.get("class_name")
    if kind != detector:
        raise WeightsMismatchError(f"{path} holds a {kind}, not a {detector}: load it with "
                                   f"rcnn_zoo.{kind}(weights=...) or rcnn_zoo.inference.load_model")
    preset = {k: v for k, v in saved.get("config", {}).items()
              if k not in ("name", "trainable", "dtype", "weights", "backbone_weights", "roi_pooling")
              and v is not None}
    _refuse_architecture_changes(detector, path, preset, given)
    if given.get("num_classes", preset.get("num_classes")) != preset.get("num_classes"):
        preset.pop("class_names", None)  # a fine-tuning start: other classes
    return {**preset, **given}


def _refuse_architecture_changes(detector, name, preset, given):
    # A layer width the preset does not list is the backbone's default, which the weights have.
    changed = [
        key for key in ("backbone",) + STRUCTURAL_KEYS
        if key in given and _normalised(given[key]) != _normalised(preset.get(key, "default"))
    ]
    for key in ("anchor_sizes", "anchor_aspect_ratios"):
        if key in given and key in preset and _anchor_count(given[key]) != _anchor_count(preset[key]):
            changed.append(key)
    if changed:
        details = ", ".join(
            f"{k}={given[k]!r} (the weights have {preset.get(k, 'the backbone default')!r})"
            for k in changed
        )
        raise WeightsMismatchError(
            f"{detector}(weights={name!r}): {details} changes the architecture, so the weights "
            "cannot load. Leave it out (the preset sets it), or build the model without "
            "weights=... to train it from scratch."
        )


def _anchor_count(values):
    """Anchors per location a sizes / ratios argument gives on each level."""
    values = list(values)
    if values and isinstance(values[0], (list, tuple)):
        return [len(v) for v in values]
    return [len(values)]


def get_weights_entry(name):
    """The registry entry of ``name``; an unknown name lists the registered ones."""
    registry = load_registry()
    if name not in registry:
        raise ValueError(
            f"Unknown weights {name!r}. Registered weights: {sorted(registry)}; or pass the path "
            "of a .weights.h5 or .keras file."
        )
    return registry[name]


def file_sha256(path, chunk_size=1 << 20):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
            lines, line = [], []
            for v in value:
                text = json.dumps(v, ensure_ascii=False)
                if line and len(", ".join(line + [text])) + indent > 96:
                    lines.append(", ".join(line))
                    line = []
                line.append(text)
            lines.append(", ".join(line))
            return "[\n" + ",\n".join(f"{pad}  {l}" for l in lines) + "\n" + pad + "]"
        items = [f"{pad} {_format_json(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


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
    data = _read_json(registry)
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


# ---------------------------------------------------------------------------- fetching
def _cache_folder(cache_dir):
    """The folder ``keras.utils.get_file`` will use for ``cache_subdir="rcnn_zoo"``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or None
    if cache_dir is None:
        try:
            from keras.src.backend.config import keras_home  # noqa: PLC0415 (private accessor)

            cache_dir = keras_home()
        except ImportError:
            cache_dir = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    base = os.path.expanduser(cache_dir)
    try:  # get_file falls back to /tmp/.keras when the folder does not exist yet
        os.makedirs(base, exist_ok=True)
    except OSError:
        pass
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return base, os.path.join(base, CACHE_SUBDIR)


def _hash_error(name, path, expected, got, url=None):
    source = f" from {url}" if url else ""
    return WeightsIntegrityError(
        f"The {name!r} weights file {path}{source} has SHA-256 {got}, expected "
        f"{expected}{'…' if len(expected) < 64 else ''}. The download is damaged or incomplete, or "
        f"the published file changed. Delete it (rm {path!s}) and try again; if it keeps failing, "
        "get the file by hand, check it, convert it if needed (rcnn-zoo convert), and pass the "
        "file instead: weights='/path/to/file.weights.h5' (or .keras)."
    )


def _local_hash_error(name, path, expected, got, entry, field):
    """A registered *local* file (the user's own, not a download) that is not the registered one:
    never advise deleting it."""
    registry = entry.get("_registry", "the registry")
    arguments = f"{name!r}, {str(path)!r}"
    try:
        if Path(registry).resolve() != builtin_registry_path().resolve():
            arguments += f", registry={str(registry)!r}"
    except OSError:
        arguments += f", registry={str(registry)!r}"
    return WeightsIntegrityError(
        f"The {name!r} weights file {path} differs from the one registered in {registry}: its "
        f"SHA-256 is {got}, expected {expected}{'…' if len(expected) < 64 else ''} (the entry's "
        f"{field!r}). If this file is the one you want (retrained or saved again, say), register "
        f"it again: rcnn_zoo.weights.register_local_file({arguments}), which records its SHA-256; "
        f"if the registry's {field!r} is wrong, correct it; otherwise put the registered file back."
    )


def _verify(name, path, entry, url=None, known_good=False, local=False):
    """Check ``path`` against the entry's SHA-256. ``local``: ``path`` is the entry's own local
    file (``"file"``), not a download."""
    full, prefix = entry.get("sha256"), entry.get("sha256_prefix")
    if not full and not prefix:
        warnings.warn(
            f"No SHA-256 is recorded for the {name!r} weights ({path}); the file is not verified. "
            "Record it with rcnn_zoo.weights.register_local_file.",
            stacklevel=3,
        )
        return
    if known_good and full:
        return
    got = file_sha256(path)
    for field, expected, matches in (
        ("sha256", full, lambda e: got == e),
        ("sha256_prefix", prefix, lambda e: got.startswith(e)),
    ):
        if expected and not matches(expected.lower()):
            if local:
                raise _local_hash_error(name, path, expected.lower(), got, entry, field)
            raise _hash_error(name, path, expected.lower(), got, url)


def _download(name, entry, cache_dir):
    url = entry["url"]
    file_name = entry.get("file_name") or os.path.basename(urllib.parse.urlsplit(url).path)
    base, folder = _cache_folder(cache_dir)
    target = os.path.join(folder, file_name)
    full = entry.get("sha256") or None
    try:
        path = keras.utils.get_file(
            file_name,
            origin=url,
            file_hash=full,
            hash_algorithm="sha256",
            cache_subdir=CACHE_SUBDIR,
            cache_dir=base,
        )
    except ValueError as error:
        if full and os.path.exists(target) and "hash" in str(error).lower():
            raise _hash_error(name, target, full, file_sha256(target), url) from error
        raise _download_error(name, url, target, entry, error) from error
    except Exception as error:  # URLError/HTTPError wrapped by Keras, OSError, ...
        raise _download_error(name, url, target, entry, error) from error
    _verify(name, path, entry, url, known_good=bool(full))
    return path


def _download_error(name, url, target, entry, error):
    if entry.get("convert"):
        local = (
            f"place the downloaded file at {target} (it is then verified and converted), or "
            "convert it yourself (rcnn-zoo convert --from ... --input file.pth --output "
            "file.weights.h5) and pass weights='/path/to/file.weights.h5'"
        )
    else:
        local = f"place the file at {target}, or pass weights='/path/to/file.weights.h5' (or .keras)"
    return WeightsDownloadError(
        f"Could not download the {name!r} weights from {url} ({type(error).__name__}: {error}). "
        f"Without network access, download it elsewhere and {local}."
    )


def _local_file(name, entry):
    path = Path(entry["file"]).expanduser()
    if not path.is_absolute():
        path = Path(entry["_registry"]).resolve().parent / path
    return path


def _converted_path(name, entry, source_path):
    # The detector is part of the tag: one checkpoint converts to a Faster R-CNN and to the
    # Fast R-CNN of its second stage, which must not share a cache file.
    tag = json.dumps(
        [entry["convert"], entry.get("convert_options", {}), CONVERT_FORMAT_VERSION]
        + ([_detector_of(entry)] if _detector_of(entry) != "FasterRCNN" else []),
        sort_keys=True,
    )
    digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
    stem = os.path.basename(source_path)
    for suffix in (".pth", ".pt", ".bin"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return os.path.join(os.path.dirname(source_path), f"{stem}.rcnn_zoo-{digest}.weights.h5")


def _convert(name, entry, source_path, converted_path, detector):
    """Convert the checkpoint ``source_path`` of entry ``name`` into a ``detector`` (class)
    built with the entry's arguments, and save its weights as ``converted_path``."""
    if detector is None:
        raise ValueError(f"the {name!r} weights are a PyTorch checkpoint that is not converted yet; "
                         f"load them through the detector: rcnn_zoo.{_detector_of(entry)}(weights={name!r})")
    converter = convert.get_converter(entry["convert"])
    state_dict = convert.read_state_dict(source_path)
    expected = int(entry["model"]["num_classes"])
    found = converter.checkpoint_num_classes(state_dict)
    if found != expected:
        raise WeightsMismatchError(
            f"registry entry {name!r} says num_classes={expected} but {source_path} has {found}"
        )
    model = detector(**entry["model"])
    convert.convert_state_dict(converter, state_dict, model=model, **entry.get("convert_options", {}))
    del state_dict
    convert.save_detector(model, converted_path)
    return converted_path


def weights_file(name, cache_dir=None, detector=None):
    """Local path of the loadable ``.weights.h5`` / ``.keras`` file of registered ``name``:
    downloaded, verified and converted as needed (see the module docstring). ``detector``: the
    detector class to convert a PyTorch checkpoint into (needed the first time only; this module
    sits below the models and builds none itself)."""
    entry = get_weights_entry(name)
    if entry.get("file"):
        path = _local_file(name, entry)
        if path.is_file():
            _verify(name, path, entry, local=True)
            return str(path)
        if not entry.get("url"):
            raise FileNotFoundError(
                f"The {name!r} weights are a local file that is not there: {path}. "
                f"{entry.get('source', '')}".strip()
            )
    if not entry.get("url"):
        raise ValueError(f"registry entry {name!r} has neither 'url' nor 'file'")
    source_path = _download(name, entry, cache_dir)
    if not entry.get("convert"):
        return source_path
    converted = _converted_path(name, entry, source_path)
    if not os.path.exists(converted):
        _convert(name, entry, source_path, converted, detector)
    return converted


# ---------------------------------------------------------------------------- loading
def checkpoint_num_classes(path):
    """Foreground classes of the detector saved in a ``.weights.h5`` / ``.keras`` file, or
    ``None`` when the file does not say (e.g. not an rcnn_zoo detector)."""
    path = os.fspath(path)
    if path.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            value = config.get("config", {}).get("num_classes")
            return int(value) if value is not None else None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None
    found = _h5_shapes(path, lambda key: "box_predictor" in key and key.endswith("cls_score/vars/0"))
    if not found or len(found) != 1 or len(found[0]) != 2:
        return None
    return int(found[0][1]) - 1


def _h5_shapes(path, wanted):
    """Shapes of the datasets of HDF5 file ``path`` whose key satisfies ``wanted``, or None when
    the file cannot be read."""
    import h5py  # noqa: PLC0415 (a Keras dependency)

    found = []

    def visit(key, item):
        if isinstance(item, h5py.Dataset) and wanted(key):
            found.append(item.shape)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError:
        return None
    return found


DAMAGED_ADVICE = "download or save it again"


def check_weights_file(path, what="weights file", advice=DAMAGED_ADVICE):
    """Refuse a ``.weights.h5`` / ``.keras`` file that cannot be what its name says: empty,
    truncated or damaged (``.weights.h5``: not a valid HDF5 file; ``.keras``: not a valid zip
    archive), or not readable.

    Args:
        path: the file (its name decides the format; other names are not checked).
        what: how the message calls it (``"weights file"``, ``"model file"``).
        advice: what to do about a damaged file, ending the message.
    Raises:
        WeightsFileError: the message names the file and what is wrong with it, e.g.
            ``cannot read weights file /x/y.weights.h5: the file is damaged or truncated (not a
            valid HDF5 file); download or save it again``.
    """
    path = os.fspath(path)
    start = f"cannot read {what} {path}"
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        raise WeightsFileError(f"{start}: {error.strerror or error}", path) from error
    if empty:
        raise WeightsFileError(f"{start}: the file is empty (0 bytes); {advice}", path)
    if path.endswith(".keras"):
        try:
            with zipfile.ZipFile(path):
                return
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise WeightsFileError(
                f"{start}: the file is damaged or truncated (not a valid zip archive, which .keras "
                f"files are); {advice}", path,
            ) from error
    if path.endswith(".h5"):
        import h5py  # noqa: PLC0415 (a Keras dependency)

        try:
            with h5py.File(path, "r"):
                return
        except OSError as error:  # "file signature not found", "truncated file: eof = ...", ...
            raise WeightsFileError(
                f"{start}: the file is damaged or truncated (not a valid HDF5 file); {advice}", path,
            ) from error


def _is_predictor(variable_path):
    return variable_path.startswith(PREDICTOR_PREFIXES)


# What h5py, zipfile and zlib raise for a file damaged past the parts check_weights_file reads.
_DAMAGED_FILE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _file_anchors_per_location(path):
    """Anchors per location of the RPN saved in a ``.weights.h5`` file (from its objectness
    layer's bias), or None."""
    found = _h5_shapes(path, lambda key: key.endswith("rpn_head/objectness/vars/1"))
    return int(found[0][0]) if found and len(found) == 1 and len(found[0]) == 1 else None


def _anchor_mismatch(model, path):
    """The message for a checkpoint whose RPN has another number of anchors per location than
    ``model`` (the usual reason a weights file does not fit), or None."""
    generator = getattr(model, "anchor_generator", None)
    if generator is None or not str(path).endswith(".h5"):
        return None
    ours = generator.num_anchors_per_location[0]
    theirs = _file_anchors_per_location(path)
    if theirs is None or theirs == ours:
        return None
    return (
        f"{path} has an RPN with {theirs} anchors per location, this {type(model).__name__} has "
        f"{ours} (anchor_sizes={generator.sizes}, anchor_aspect_ratios={generator.aspect_ratios}): "
        "build the model with the anchor_sizes and anchor_aspect_ratios the checkpoint was "
        "trained with (rcnn-zoo train writes them into config.json; a .keras file carries them, "
        "so FasterRCNN(weights='best.keras') needs no other argument)"
    )


def _keras_load(model, path):
    try:
        model.load_weights(path)
    except _DAMAGED_FILE_ERRORS as error:
        raise WeightsFileError(
            f"cannot read weights file {path}: the file is damaged or truncated "
            f"({type(error).__name__}: {error}); {DAMAGED_ADVICE}", path,
        ) from error
    except (ValueError, KeyError, TypeError) as error:
        anchors = _anchor_mismatch(model, path)
        if anchors:
            raise WeightsMismatchError(anchors) from error
        raise WeightsMismatchError(
            f"{path} does not fit this {type(model).__name__} ({error}). A weights file loads "
            "only into a detector built with the same backbone and layer hyperparameters as the "
            "one that saved it (a .keras file records them: keras.saving.load_model)."
        ) from error


def _load_all_but_predictor(model, path, checkpoint_classes):
    """Load ``path`` into a twin with the checkpoint's classes, then copy all but the predictor."""
    config = model.get_config()
    config.update(
        {
            "num_classes": checkpoint_classes,
            "class_names": None,
            "weights": None,
            "name": f"{model.name}_checkpoint",
        }
    )
    twin = type(model).from_config(config)
    _keras_load(twin, path)
    source = {v.path: v for v in twin.weights}
    if len(source) != len(twin.weights):
        raise WeightsMismatchError("variable paths are not unique; cannot match layers by name")
    skipped = set()
    for variable in model.weights:
        if _is_predictor(variable.path):
            skipped.add(variable.path.rpartition("/")[0])
            continue
        twin_variable = source.get(variable.path)
        if twin_variable is None or tuple(twin_variable.shape) != tuple(variable.shape):
            raise WeightsMismatchError(f"{path}: no matching variable for {variable.path}")
        variable.assign(twin_variable)
    del twin, source
    warnings.warn(
        f"{path} holds a detector with {checkpoint_classes} classes, this model has "
        f"{model.num_classes}: loaded every layer except {', '.join(sorted(skipped))}, which keep "
        "their initialisation (fine-tune the model before use).",
        stacklevel=3,
    )
    return sorted(skipped)


def load_weights_file(model, path, strict=False):
    """Load a ``.weights.h5`` or ``.keras`` file into a built detector.

    Args:
        model: the detector.
        path: file written by ``save_weights`` / ``save`` (or ``rcnn-zoo convert``).
        strict: refuse a file whose detector has a different ``num_classes``; by default the
            class-specific predictor is then left initialised (with a warning).

    Returns:
        Names of the layers left initialised (empty when everything was loaded).

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: the file is empty, truncated or damaged (not a valid HDF5 file / zip
            archive); the message names it.
        WeightsMismatchError: the file's detector does not fit ``model``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No weights file at {path!r}. Pass a .weights.h5 / .keras file or a registered name "
            f"({', '.join(available_weights())})."
        )
    if path.endswith((".pth", ".pt", ".bin")):
        raise ValueError(
            f"{path} is a PyTorch checkpoint. Convert it first: rcnn-zoo convert --from "
            "torchvision|torchvision_v2|torchvision_mobilenet|mmdet --input <file.pth> "
            "--output <file.weights.h5> (or rcnn_zoo.convert.checkpoint.convert_checkpoint), then pass the "
            ".weights.h5."
        )
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(f"weights files must end in .weights.h5 or .keras, got {path!r}")
    check_weights_file(path)
    found = checkpoint_num_classes(path)
    if found is None or found == model.num_classes:
        _keras_load(model, path)
        return []
    if strict:
        raise WeightsMismatchError(
            f"{path} holds a detector with num_classes={found}, this model has "
            f"num_classes={model.num_classes}. Build the model with num_classes={found}, or load "
            "non-strictly (strict=False, as FasterRCNN(weights=...) does) to take everything "
            "except the class-specific predictor (box_predictor/cls_score, "
            "box_predictor/bbox_pred) for fine-tuning."
        )
    return _load_all_but_predictor(model, path, found)


def _normalised(value):
    return json.loads(json.dumps(value))


def _check_entry_fits(model, name, entry, strict):
    """Refuse structural mismatches before downloading; warn about behaviour differences."""
    arguments = entry["model"]
    backbone = arguments.get("backbone")
    if backbone != getattr(model, "backbone_name", backbone):
        raise WeightsMismatchError(
            f"The {name!r} weights are for backbone {backbone!r}; this model uses "
            f"{model.backbone_name!r}. Build it with {type(model).__name__}(weights={name!r}), "
            "which takes the backbone and every setting from the preset."
        )
    hp = getattr(model, "hp", {})
    structural = {
        k: (hp[k], v) for k, v in arguments.items()
        if k in STRUCTURAL_KEYS and k in hp and _normalised(hp[k]) != _normalised(v)
    }
    if hp and "anchor_sizes" in arguments:
        wanted = AnchorGenerator(
            sizes=arguments["anchor_sizes"],
            aspect_ratios=arguments.get("anchor_aspect_ratios", hp["anchor_aspect_ratios"]),
            strides=model.anchor_generator.strides,
            convention=arguments.get("anchor_style", hp["anchor_style"]),
        ).num_anchors_per_location
        have = model.anchor_generator.num_anchors_per_location
        if wanted != have:
            structural["anchors per location"] = (have, wanted)
    if structural:
        details = "; ".join(f"{k}: model {m!r}, weights {w!r}" for k, (m, w) in structural.items())
        raise WeightsMismatchError(
            f"The {name!r} weights do not fit this model's layer sizes ({details}). Build it with "
            f"{type(model).__name__}(weights={name!r}) (the preset's arguments: {arguments})."
        )
    expected_classes = int(arguments["num_classes"])
    if strict and model.num_classes != expected_classes:
        raise WeightsMismatchError(
            f"The {name!r} weights have num_classes={expected_classes}, this model "
            f"{model.num_classes}; strict=True refuses to leave the predictor initialised."
        )
    differences = {
        k: (hp[k], v) for k, v in arguments.items()
        if k in BEHAVIOUR_KEYS and k in hp and _normalised(hp[k]) != _normalised(v)
    }
    notes = []
    if differences:
        notes.append(
            "these settings differ from the ones its published metric was measured with: "
            + "; ".join(f"{k}={m!r} here, {w!r} there" for k, (m, w) in differences.items())
            + f" ({type(model).__name__}(weights={name!r}) without them builds the source model)"
        )
    if entry.get("not_expressible"):
        notes.append(
            f"the source model also uses {entry['not_expressible']}, which FasterRCNN cannot "
            "express yet (see the entry's 'differences')"
        )
    if notes:
        warnings.warn(f"Weights {name!r}: " + "; ".join(notes) + ".", stacklevel=4)


def load_detector_weights(model, weights, strict=False, cache_dir=None):
    """Load registered or file weights into a built detector (``FasterRCNN(weights=...)``).

    Args:
        model: the detector (its layers built).
        weights: a registered name (``"voc"``, ``"coco"``, ``"shapes"``, see
            :func:`available_weights`) or a path to a ``.weights.h5`` / ``.keras`` file.
        strict: refuse weights with a different ``num_classes`` instead of loading everything
            but the class-specific predictor.
        cache_dir: download cache root (default ``$RCNN_ZOO_CACHE_DIR`` or Keras' ``~/.keras``);
            files go to its ``rcnn_zoo/`` folder.

    Returns:
        Names of the layers left initialised (empty when everything was loaded).

    Raises:
        ValueError: unknown name (the message lists the registered ones).
        FileNotFoundError: missing local file.
        WeightsMismatchError: wrong backbone or layer sizes; other classes with ``strict``.
        WeightsDownloadError: the download failed (the URL is named, with the offline way).
        WeightsIntegrityError: SHA-256 mismatch (expected, got and the file named).
        WeightsFileError: the file is empty, truncated or damaged (named in the message).
    """
    weights = os.fspath(weights)
    if _is_file_argument(weights):
        return load_weights_file(model, weights, strict=strict)
    found = find_preset(type(model).__name__, weights)
    if found is None:
        raise ValueError(
            f"Unknown weights {weights!r} for {type(model).__name__}. Registered: "
            f"{available_weights(type(model).__name__)}; or pass the path of a .weights.h5 or "
            ".keras file."
        )
    key, entry = found
    _check_entry_fits(model, weights, entry, strict)
    path = weights_file(key, cache_dir=cache_dir, detector=type(model))
    check_weights_file(path, advice=_damaged_registered_file_advice(key, entry, path))
    skipped = load_weights_file(model, path, strict=strict)
    if not skipped and model.class_names is None and entry.get("class_names"):
        if len(entry["class_names"]) == model.num_classes:
            model.class_names = list(entry["class_names"])
    return skipped


def _damaged_registered_file_advice(name, entry, path):
    """What to do about a damaged file of registered ``name`` (one without a SHA-256 to catch it
    earlier): a local file is the user's to save again; a download or conversion is rcnn_zoo's
    cached copy, fetched again once deleted."""
    if entry.get("file") and Path(path) == _local_file(name, entry):
        return (
            f"it is the file registered as {name!r} in {entry.get('_registry', 'the registry')}: "
            "save it again and register it (rcnn_zoo.weights.register_local_file)"
        )
    return (
        f"it is rcnn_zoo's cached copy of the {name!r} weights: delete it (rm {path}) and load them "
        "again to download it anew"
    )
