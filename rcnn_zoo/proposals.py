"""Class-agnostic region proposals computed outside the network, for R-CNN and Fast R-CNN.

Selective search (Uijlings et al., "Selective Search for Object Recognition", IJCV 2013) through
OpenCV's ``cv2.ximgproc.segmentation`` (package ``opencv-contrib-python(-headless)``), a cache
of the proposals of a dataset on disk, and the helpers that bring them into ``model.fit``.

Shapes: ``N`` proposals of one image, ``B`` images in a batch, ``R`` proposal slots per image
(padded). Boxes are float32 ``xyxy`` in continuous pixels of the image they were computed on
(``x2 − x1`` is the width). A padded slot is all zeros: no width, so Fast R-CNN ignores it (a
row is a proposal when it has positive width and height).

    boxes = selective_search(image)                          # [N, 4], best ranked first
    per_image = compute_proposals(paths, cache_dir="ss")     # cached as .npz, one per image
    batch = pad_proposals(per_image[:2], max_proposals=2000) # [2, 2000, 4]

Speed: selective search is sequential C++ and its cost grows faster than the pixel count. On
the 650×417 raccoon photo, one core: fast mode 1.5 s at full size, 0.7 s shrunk to 500 px;
quality mode 5.1 s and 2.5 s (``benchmarks/bench_fast_rcnn.py``). So images whose longer side
exceeds ``max_side`` (500 px by default, the size R-CNN ran it at) are shrunk first and the boxes
mapped back with the exact per-axis factors.
"""

import ctypes
import ctypes.util
import hashlib
import json
import os
import tempfile

import numpy as np

__all__ = [
    "selective_search",
    "compute_proposals",
    "proposal_cache_key",
    "pad_proposals",
    "proposals_dataset",
    "add_proposals",
    "MODES",
]

MODES = ("fast", "quality")
_CACHE_VERSION = 1  # bump when what selective_search returns changes, to invalidate caches


def _segmentation_module():
    """``cv2.ximgproc.segmentation``, or an ImportError saying which package provides it."""
    hint = (
        "Selective search needs OpenCV's contrib modules (cv2.ximgproc): "
        "pip install opencv-contrib-python-headless (and uninstall opencv-python / "
        "opencv-python-headless, which provide a cv2 without them)."
    )
    try:
        import cv2  # noqa: PLC0415 (optional dependency)
    except ImportError as error:
        raise ImportError(f"OpenCV is not installed. {hint}") from error
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(f"cv2 {getattr(cv2, '__version__', '?')} has no ximgproc. {hint}")
    return cv2, cv2.ximgproc.segmentation


def _seed_c_rand(seed):
    """Seed the C library's ``rand()``, which OpenCV uses to rank the regions (best effort).

    OpenCV draws each region's rank as ``rand() · level`` (the paper's pseudo-random ranking),
    so without a seed the order of the boxes — and which ones ``max_proposals`` keeps — changes
    from run to run. Returns False when no C library could be loaded (the order stays random).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        return True
    except (OSError, AttributeError, TypeError):
        return False


def _as_uint8_rgb(image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB (or [H, W] gray), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image must be at least 2×2 pixels, got {image.shape[:2]}")
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float64)), 0, 255).astype(np.uint8)
    return image


def selective_search(
    image,
    mode="fast",
    max_proposals=2000,
    min_size=16,
    max_side=500,
    seed=0,
    num_threads=1,
):
    """Selective search proposals of one image.

    Args:
        image: ``[H, W, 3]`` RGB pixels (uint8, or float 0..255; ``[H, W]`` gray is accepted).
        mode: ``"fast"`` (``switchToSelectiveSearchFast``: 2 colour spaces × 2 strategies × 2
            segmentation scales, the setting of R-CNN and Fast R-CNN) or ``"quality"``
            (``switchToSelectiveSearchQuality``: 5 colour spaces, 4 strategies, 4 scales —
            higher recall, much slower).
        max_proposals: keep the ``max_proposals`` best ranked boxes (``None``: all).
        min_size: drop boxes narrower or shorter than this, in ``image`` pixels (16 = one cell
            of a stride-16 feature map; ``0`` keeps every box).
        max_side: if the longer side of ``image`` exceeds this, selective search runs on a copy
            shrunk to it (speed; see the module docstring) and the boxes are mapped back to
            ``image`` pixels. ``None`` never resizes.
        seed: seeds the C ``rand()`` OpenCV ranks regions with, so the order is reproducible
            (glibc/Linux; elsewhere the order may differ between runs, the set of boxes does
            not). ``None`` leaves the generator alone.
        num_threads: OpenCV threads during the call (``cv2.setNumThreads``; restored after).
            The grouping is sequential, so 1 loses nothing and leaves the other cores to
            training; ``None`` keeps OpenCV's setting.

    Returns:
        float32 ``[N, 4]`` xyxy boxes in continuous ``image`` pixels, inside
        ``[0, W] × [0, H]``, without duplicates, best ranked first (OpenCV's hierarchical
        ranking: small regions of the first grouping levels come first).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if max_proposals is not None and int(max_proposals) < 1:
        raise ValueError(f"max_proposals must be ≥ 1 or None, got {max_proposals}")
    cv2, segmentation = _segmentation_module()
    image = _as_uint8_rgb(image)
    height, width = image.shape[:2]
    work = image[..., ::-1]  # OpenCV's colour-space conversions expect BGR
    if max_side is not None and max(height, width) > max_side:
        factor = float(max_side) / max(height, width)
        size = (max(2, int(round(width * factor))), max(2, int(round(height * factor))))
        work = cv2.resize(np.ascontiguousarray(work), size, interpolation=cv2.INTER_AREA)
    work = np.ascontiguousarray(work)
    scale_x = width / work.shape[1]
    scale_y = height / work.shape[0]

    previous_threads = cv2.getNumThreads()
    if num_threads is not None:
        cv2.setNumThreads(int(num_threads))
    try:
        search = segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(work)
        if mode == "fast":
            search.switchToSelectiveSearchFast()
        else:
            search.switchToSelectiveSearchQuality()
        if seed is not None:
            _seed_c_rand(seed)
        rects = np.asarray(search.process(), dtype=np.float64).reshape(-1, 4)
    finally:
        if num_threads is not None:
            cv2.setNumThreads(previous_threads)

    # OpenCV rects are (x, y, w, h) over whole pixels: columns x … x + w − 1, i.e. the
    # continuous box x … x + w.
    boxes = np.stack(
        [
            rects[:, 0] * scale_x,
            rects[:, 1] * scale_y,
            (rects[:, 0] + rects[:, 2]) * scale_x,
            (rects[:, 1] + rects[:, 3]) * scale_y,
        ],
        axis=1,
    )
    boxes = np.clip(boxes, 0.0, [width, height, width, height]).astype(np.float32)
    keep = (boxes[:, 2] - boxes[:, 0] >= max(min_size, 1e-6)) & (
        boxes[:, 3] - boxes[:, 1] >= max(min_size, 1e-6)
    )
    boxes = boxes[keep]
    # OpenCV removes duplicates in its own pixels; keep the first of any left after mapping.
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_proposals is not None:
        boxes = boxes[: int(max_proposals)]
    return np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------- dataset cache
def proposal_cache_key(image, **settings):
    """What identifies one cached result: the image and every setting that changes the boxes.

    ``image`` is a path (identified by its absolute path, size and modification time: editing
    the file invalidates its entry) or an array (identified by a SHA-1 of its pixels).
    Returns a dict that is also stored in the cache file and compared when it is read.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(image))
        stat = os.stat(path)
        source = {"path": path, "mtime_ns": stat.st_mtime_ns, "bytes": stat.st_size}
    else:
        array = _as_uint8_rgb(image)
        source = {"sha1": hashlib.sha1(array.tobytes()).hexdigest(), "shape": list(array.shape)}
    return {"version": _CACHE_VERSION, "image": source, **settings}


def _cache_file(cache_dir, image, key):
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    if isinstance(image, (str, os.PathLike)):
        stem = os.path.splitext(os.path.basename(os.fspath(image)))[0][:60]
    else:
        stem = "array"
    return os.path.join(cache_dir, f"{stem}-{digest}.npz")


def _read_cache(path, key):
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != key:
                return None
            return data["boxes"].astype(np.float32).reshape(-1, 4)
    except (OSError, ValueError, KeyError):  # missing, truncated or foreign file: recompute
        return None


def _write_cache(path, key, boxes):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    # Write then rename, so a reader never sees half a file (several processes may share it).
    handle, temporary = tempfile.mkstemp(suffix=".npz", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, boxes=boxes, key=np.asarray(json.dumps(key, sort_keys=True)))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read_image(path):
    """RGB uint8 pixels of an image file, as ``tf.io.decode_image`` gives them (no EXIF
    rotation), so the boxes match the images of ``rcnn_zoo.data``'s pipeline."""
    cv2, _ = _segmentation_module()
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imread(os.fspath(path), flags)
    if image is None:
        raise OSError(f"cannot read image {os.fspath(path)!r}")
    return image[..., ::-1]


def compute_proposals(
    images,
    cache_dir=None,
    mode="fast",
    max_proposals=2000,
    min_size=16,
    max_side=500,
    seed=0,
    num_threads=1,
    verbose=False,
):
    """Selective search proposals of many images, cached on disk.

    Args:
        images: a list of image paths, or of ``[H, W, 3]`` arrays (or an ``[N, H, W, 3]``
            array). Boxes are in the pixels of each image as read (paths) or given (arrays).
        cache_dir: folder for one ``.npz`` per image (``None``: no cache). An entry is keyed by
            the image (path + size + modification time, or the pixels' hash for arrays),
            ``mode``, ``max_proposals``, ``min_size``, ``max_side`` and ``seed``; a hit is read,
            never recomputed, and a stale or unreadable entry is recomputed and replaced.
        mode, max_proposals, min_size, max_side, seed, num_threads: as
            :func:`selective_search`.
        verbose: print progress every 100 images.

    Returns:
        list of float32 ``[N_i, 4]`` xyxy arrays, one per image, in order.

    Runs one image at a time (OpenCV ranks with the process-wide C ``rand()``, so concurrent
    calls would not be reproducible); for a large dataset run several processes over shards
    with the same ``cache_dir``.
    """
    settings = {
        "mode": mode,
        "max_proposals": None if max_proposals is None else int(max_proposals),
        "min_size": float(min_size),
        "max_side": None if max_side is None else int(max_side),
        "seed": seed,
    }
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    results = []
    for index, image in enumerate(images):
        key = path = None
        if cache_dir is not None:
            key = proposal_cache_key(image, **settings)
            path = _cache_file(os.fspath(cache_dir), image, key)
            cached = _read_cache(path, key)
            if cached is not None:
                results.append(cached)
                continue
        pixels = _read_image(image) if isinstance(image, (str, os.PathLike)) else image
        boxes = selective_search(pixels, num_threads=num_threads, **settings)
        if cache_dir is not None:
            _write_cache(path, key, boxes)
        results.append(boxes)
        if verbose and (index + 1) % 100 == 0:
            print(f"selective search: {index + 1}/{len(images)} images")
    return results


# ---------------------------------------------------------------------------- batching
def pad_proposals(proposals, max_proposals=None):
    """Per-image proposals → one zero-padded float32 ``[B, R, 4]`` array.

    Args:
        proposals: list of ``B`` arrays ``[N_i, 4]`` (xyxy, best first).
        max_proposals: ``R``; images with more keep their first ``R`` (best ranked). ``None``:
            the largest ``N_i`` (at least 1).
    """
    arrays = [np.asarray(p, np.float32).reshape(-1, 4) for p in proposals]
    slots = max([len(p) for p in arrays] + [1]) if max_proposals is None else int(max_proposals)
    out = np.zeros((len(arrays), slots, 4), np.float32)
    for i, boxes in enumerate(arrays):
        boxes = boxes[:slots]
        out[i, : len(boxes)] = boxes
    return out


def proposals_dataset(
    images,
    proposals,
    targets=None,
    batch_size=2,
    max_proposals=None,
    shuffle=False,
    seed=None,
    drop_remainder=False,
):
    """In-memory images, proposals and targets → a ``tf.data.Dataset`` for Fast R-CNN.

    Args:
        images: ``[N, H, W, 3]`` array of raw pixels (one size; see :func:`add_proposals` for
            the file pipeline of ``rcnn_zoo.data``).
        proposals: list of ``N`` arrays ``[N_i, 4]`` xyxy pixels of these images, or an already
            padded ``[N, R, 4]`` array.
        targets: optional dict of ``[N, ...]`` arrays (``{"boxes", "labels"}``) for ``fit``.
        batch_size: images per batch (Fast R-CNN's paper: 2 images × 64 RoIs).
        max_proposals: ``R`` (see :func:`pad_proposals`).
        shuffle, seed: reshuffle every epoch.
        drop_remainder: static batch dimension.

    Returns:
        Dataset of ``{"images": float32 [B, H, W, 3], "proposals": float32 [B, R, 4]}`` or of
        ``(that, targets)`` batches.
    """
    import tensorflow as tf  # noqa: PLC0415 (keep selective search importable without TF)

    images = np.asarray(images)
    if isinstance(proposals, np.ndarray) and proposals.ndim == 3:
        padded = proposals.astype(np.float32)
        if max_proposals is not None:
            padded = pad_proposals(list(padded), max_proposals)
    else:
        padded = pad_proposals(proposals, max_proposals)
    if len(padded) != len(images):
        raise ValueError(f"{len(images)} images but proposals for {len(padded)}")
    inputs = {"images": images, "proposals": padded}
    elements = inputs if targets is None else (inputs, targets)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def cast(x, y=None):
        x = {"images": tf.cast(x["images"], tf.float32), "proposals": x["proposals"]}
        return x if y is None else (x, y)

    return dataset.map(cast, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def add_proposals(dataset, proposals, max_proposals=None):
    """Add proposals to the batches of ``rcnn_zoo.data.make_tf_dataset(..., return_metadata=True)``.

    Each batch ``(inputs, targets)`` becomes ``({**inputs, "proposals": [B, R, 4]},
    targets)``: the proposals of record ``targets["image_id"]`` (in the records' order, as
    :func:`compute_proposals` returns them for ``[r.image_path for r in records]``), scaled by
    ``targets["scale"]`` into the resized pixels the pipeline produced. Shuffling is fine: the
    lookup follows the image id.

    Horizontally flipped images (the pipeline's ``"flipped"`` metadata) get mirrored proposals.

    Args:
        dataset: batched dataset with ``image_id [B]`` and ``scale [B, 2]`` in its targets.
        proposals: list of per-record ``[N_i, 4]`` arrays in original image pixels, or a
            padded ``[N, R, 4]`` array.
        max_proposals: ``R`` (see :func:`pad_proposals`).
    """
    import tensorflow as tf  # noqa: PLC0415

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)
            and "image_id" in spec[1] and "scale" in spec[1]):
        raise ValueError(
            "add_proposals needs batches (images, targets) whose targets carry 'image_id' and "
            "'scale': build the dataset with make_tf_dataset(..., return_metadata=True)"
        )
    if isinstance(proposals, np.ndarray) and proposals.ndim == 3:
        proposals = list(proposals)
    table = tf.constant(pad_proposals(proposals, max_proposals))

    def attach(inputs, targets):
        boxes = tf.gather(table, targets["image_id"])  # [B, R, 4] original pixels
        scale = tf.cast(targets["scale"], tf.float32)  # (sy, sx)
        factors = tf.stack([scale[:, 1], scale[:, 0], scale[:, 1], scale[:, 0]], axis=-1)
        valid = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        boxes = boxes * factors[:, None, :]
        if "flipped" in targets:
            width = tf.cast(targets["image_size"][:, 1], tf.float32)[:, None]
            mirrored = tf.stack(
                [width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], -1
            )
            boxes = tf.where(tf.cast(targets["flipped"], tf.bool)[:, None, None], mirrored, boxes)
        boxes = tf.where(valid[..., None], boxes, 0.0)  # padding stays exactly zero
        inputs = dict(inputs) if isinstance(inputs, dict) else {"images": inputs}
        return {**inputs, "proposals": boxes}, targets

    return dataset.map(attach, num_parallel_calls=tf.data.AUTOTUNE)
