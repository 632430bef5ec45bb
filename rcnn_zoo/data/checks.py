"""What the dataset readers check as they read, and how they report it.

- :func:`check_image` / :func:`check_images`: can an image file be used, and its ``(height,
  width)`` in pixels (``"header"``: read the size; ``"decode"``: also decode every pixel, as the
  input pipeline will).
- :func:`sanitize_boxes`: clip boxes (float32 ``[n, 4]`` xyxy, continuous pixels) partly outside
  ``[0, width] × [0, height]``, and find the unusable ones.
- :class:`ProblemLog`: what a reader skipped or changed, as one summary
  :class:`DatasetWarning` (or a :class:`DatasetError` on the first problem in ``strict`` mode).
"""

import concurrent.futures
import math
import os
import re
import warnings

import numpy as np
import tensorflow as tf

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "UnreadableImageError",
    "ProblemLog",
    "problem_text",
    "check_image",
    "check_images",
    "sanitize_boxes",
]

# Formats that ``tf.io.decode_image`` decodes (PIL's names; MPO is a multi-picture JPEG).
_DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}
# First bytes of those formats: a file that starts like one but cannot be read is damaged.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


class DatasetError(ValueError):
    """Bad data met by a reader in ``strict=True`` mode (the message names the file)."""


class DatasetWarning(UserWarning):
    """The one summary warning a reader gives when it skipped or changed something."""


# Problem kinds a reader reports; the ones in _KEPT_PROBLEMS change data but drop nothing.
MISSING_FILE = "missing file"
UNREADABLE_IMAGE = "unreadable image"
MALFORMED_ANNOTATION = "malformed annotation"
DUPLICATE_IMAGE = "duplicate image (only the first kept)"
BOX_OUTSIDE = "box wholly outside the image"
EMPTY_BOX = "zero-area or inverted box"
NON_FINITE_BOX = "box with NaN or infinite coordinates"
UNKNOWN_CLASS = "unknown class"
BOX_CLIPPED = "box partly outside the image (clipped, kept)"
SIZE_MISMATCH = "annotated size differs from the image (image size used, kept)"
_KEPT_PROBLEMS = (BOX_CLIPPED, SIZE_MISMATCH)
_IMAGE_LEVEL_PROBLEMS = (MISSING_FILE, UNREADABLE_IMAGE, MALFORMED_ANNOTATION, DUPLICATE_IMAGE, SIZE_MISMATCH)

# Why an image file cannot be used (the start of an UnreadableImageError's message).
EMPTY_IMAGE_FILE = "empty file (0 bytes)"
NOT_AN_IMAGE = "not an image (its contents are in no image format)"
DAMAGED_IMAGE = "truncated or damaged image data"


class UnreadableImageError(OSError):
    """:func:`check_image`: the file exists but cannot be used as an image; the message says
    why in words (empty, not an image, truncated or damaged, a format TensorFlow cannot
    decode) and does not repeat the path (the reader's report names the file)."""


class ProblemLog:
    """Collects what a reader skipped or changed, then gives one summary warning.

    ``report(kind, file, detail, unit)`` raises :class:`DatasetError` naming the file when
    ``strict``; otherwise it records ``"file: detail"`` under ``kind``. ``warn()`` emits one
    :class:`DatasetWarning` with the count per kind and the first few files of each. ``unit``
    (``"image"``, ``"object"``) says what one report of the kind counts; by default images for
    the image-level kinds (the image is skipped), objects for the others.
    """

    def __init__(self, source, strict=False, max_listed=3):
        self.source = source
        self.strict = strict
        self.max_listed = max_listed
        self.items = {}
        self.units = {}

    def report(self, kind, file, detail="", unit=None):
        entry = f"{file}: {detail}" if detail else str(file)
        if self.strict:
            raise DatasetError(f"{kind}: {entry}")
        self.items.setdefault(kind, []).append(entry)
        unit = unit or ("image" if kind in _IMAGE_LEVEL_PROBLEMS else "object")
        self.units.setdefault(kind, set()).add(unit)

    def summary(self):
        """The warning's text: a head line, then one line per problem kind with its count and
        the first ``max_listed`` files."""
        lines = []
        for kind, entries in self.items.items():
            listed = "; ".join(entries[: self.max_listed])
            extra = len(entries) - self.max_listed
            more = f"; … {extra} more" if extra > 0 else ""
            units = self.units.get(kind) or {"image" if kind in _IMAGE_LEVEL_PROBLEMS else "object"}
            unit = f"{next(iter(units))}(s)" if len(units) == 1 else "item(s)"
            lines.append(f"  {kind}: {len(entries)} {unit}: {listed}{more}")
        skipped = sum(len(v) for k, v in self.items.items() if k not in _KEPT_PROBLEMS)
        head = f"{self.source}: skipped {skipped} item(s) of bad data (strict=True raises on the first instead):"
        return "\n".join([head] + lines)

    def warn(self, stacklevel=3):
        if self.items:
            warnings.warn(self.summary(), DatasetWarning, stacklevel=stacklevel)


def problem_text(error):
    """An exception of :func:`check_image` (or a reader) as the detail of a report: the message
    of an :class:`UnreadableImageError`, else ``"TypeName: message"``."""
    if isinstance(error, UnreadableImageError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def check_image(path, check="header"):
    """``(height, width)`` of an image file, or raise ``FileNotFoundError`` (no such file) or
    :class:`UnreadableImageError` (an ``OSError`` saying why the file cannot be used: empty,
    not an image, truncated or damaged, a format ``tf.io.decode_image`` cannot decode).

    ``check``: ``"header"`` opens the file and reads its size (fast; a truncated file passes),
    ``"decode"`` also decodes every pixel, with PIL and with ``tf.io.decode_image`` (what the
    input pipeline uses), ``"none"`` only checks that the file exists and returns None.
    """
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415  (only the readers need PIL)

    if check == "none":
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return None
    if check not in ("header", "decode"):
        raise ValueError(f"check_images must be 'header', 'decode' or 'none', got {check!r}")
    if os.path.isdir(path):
        raise UnreadableImageError("a folder, not an image file")
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableImageError(f"cannot open the file ({error.strerror or error})") from error
    with handle:
        head = handle.read(16)
        if not head:
            raise UnreadableImageError(EMPTY_IMAGE_FILE)
        handle.seek(0)
        try:
            with Image.open(handle) as image:
                image_format = image.format
                width, height = image.size
                if check == "decode" and image_format in _DECODABLE_FORMATS:
                    image.load()
        except UnidentifiedImageError as error:
            if head.startswith(_IMAGE_SIGNATURES):  # starts like an image: a damaged one
                raise UnreadableImageError(f"{DAMAGED_IMAGE} (its header cannot be read)") from error
            raise UnreadableImageError(NOT_AN_IMAGE) from error
        except Image.DecompressionBombError as error:
            raise UnreadableImageError(f"too large to decode safely ({error})") from error
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error, …
            raise UnreadableImageError(f"{DAMAGED_IMAGE} ({str(error) or type(error).__name__})") from error
    if image_format not in _DECODABLE_FORMATS:
        raise UnreadableImageError(f"a {image_format} image, which tf.io.decode_image cannot decode "
                                   "(convert it to JPEG or PNG)")
    if not width or not height:
        raise UnreadableImageError(f"{DAMAGED_IMAGE} (size {width}x{height})")
    if check == "decode":
        _check_tensorflow_decodes(path, height, width)
    return height, width


def _check_tensorflow_decodes(path, height, width):
    """Decode ``path`` as the input pipeline will (``tf.io.decode_image``): PIL accepts files
    that TensorFlow refuses (a PNG cut short before its end chunk), which would otherwise stop
    training or evaluation half-way with a TensorFlow traceback."""
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        message = re.sub(r"\{\{[^}]*\}\}\s*", "", message)
        message = re.sub(r"\s*\[Op:\w+\].*", "", message, flags=re.S).strip().splitlines()
        reason = message[0] if message else type(error).__name__
        raise UnreadableImageError(f"{DAMAGED_IMAGE} (TensorFlow cannot decode it: {reason})") from error
    decoded = tuple(int(v) for v in image.shape[:2])
    if decoded != (height, width):
        raise UnreadableImageError(
            f"{DAMAGED_IMAGE} (TensorFlow decodes it as {decoded[1]}x{decoded[0]}, its header says "
            f"{width}x{height})"
        )


def check_images(paths, check="header", num_threads=8):
    """:func:`check_image` over many paths in threads: a list of ``(height, width)`` or the
    exception raised for that path."""

    def one(path):
        try:
            return check_image(path, check)
        except Exception as error:  # returned, so the reader can report the file
            return error

    if len(paths) < 64:
        return [one(p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        return list(pool.map(one, paths))


def sanitize_boxes(boxes, height, width, problems, file, names=None, indices=None, shown=None):
    """Clip boxes partly outside ``[0, width] × [0, height]``; find wholly-outside, zero-area,
    inverted and non-finite (NaN, inf) ones. Returns a bool ``[n]`` mask of boxes to keep (clipping in place).

    ``file`` names the source in messages: one for all boxes (messages then say "object i"),
    or a list with one entry per box. Optional, per box: ``names`` (class names), ``indices``
    (the objects' positions in the file, default ``0 … n−1``) and ``shown`` (the coordinates
    as written in the file, default ``boxes``) make the messages clearer.
    """
    keep = np.ones(len(boxes), bool)
    per_box = isinstance(file, (list, tuple))
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        where = file[i] if per_box else file
        text = "" if per_box else f"object {indices[i] if indices is not None else i} "
        if names is not None:
            text += f"{names[i]!r} "
        original = box if shown is None else shown[i]
        text += f"box {[round(float(v), 2) for v in original]}"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.report(NON_FINITE_BOX, where, text)
            keep[i] = False
        elif x2 <= x1 or y2 <= y1:
            problems.report(EMPTY_BOX, where, text)
            keep[i] = False
        elif x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            problems.report(BOX_OUTSIDE, where, f"{text} in a {width}x{height} image")
            keep[i] = False
        elif x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            problems.report(BOX_CLIPPED, where, f"{text} in a {width}x{height} image")
            boxes[i] = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    return keep
