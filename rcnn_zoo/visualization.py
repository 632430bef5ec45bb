"""Pictures of detections, drawn with ``keras.visualization.draw_bounding_boxes``, and of
training curves (PIL only: matplotlib is not a dependency)."""

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import keras

from rcnn_zoo.checkpoints import read_history
from rcnn_zoo.utils import flat_numbers


def draw_detections(image, detections, class_names=None, bounding_box_format="xyxy",
                    score_threshold=0.5, color=(255, 40, 40)):
    """Draw one image's detections. Returns a uint8 ``[H, W, 3]`` array.

    Args:
        image: ``[H, W, 3]`` RGB pixels 0..255.
        detections: dict ``boxes [D, 4]``, ``scores [D]``, ``labels [D]`` and optionally
            ``num_detections`` (the output of ``model.predict`` for one image).
        class_names: list of names indexed by label, shown next to each box with its score.
        score_threshold: boxes scoring below it are not drawn.
    """
    boxes = np.asarray(detections["boxes"], np.float32)
    scores = np.asarray(detections["scores"], np.float32)
    labels = np.asarray(detections["labels"], np.int64)
    count = int(detections.get("num_detections", len(scores)))
    keep = (np.arange(len(scores)) < count) & (scores >= score_threshold) & (labels >= 0)
    mapping = dict(enumerate(class_names)) if class_names else None
    drawn = keras.visualization.draw_bounding_boxes(
        np.asarray(image, np.uint8)[None].copy(),
        {
            "boxes": boxes[keep][None],
            "labels": labels[keep][None],
            "confidences": scores[keep][None],
        },
        bounding_box_format=bounding_box_format,
        class_mapping=mapping,
        color=color,
        line_thickness=2,
        font_scale=0.4,
    )
    return np.asarray(drawn[0], np.uint8)


def _save_atomically(image, path):
    """``image.save(path)`` as PNG through a temporary file + rename (a kill leaves the old file)."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_png(array, path):
    """Write a uint8 ``[H, W, 3]`` array as PNG (atomically)."""
    return _save_atomically(Image.fromarray(np.asarray(array, np.uint8)), path)


# ------------------------------------------------------------------------------------------
# Training curves

_CURVE_COLOURS = {
    "loss": (0, 0, 0), "rpn_cls": (31, 119, 180), "rpn_box": (255, 127, 14), "cls": (44, 160, 44),
    "box": (214, 39, 40), "val_mAP": (148, 103, 189),
}


def _nice_ticks(low, high, count=5):
    """Round tick values (a step of 1, 2 or 5 × 10^k, at most ``count + 1`` ticks) in
    ``low … high``."""
    span = high - low if high > low else 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * span:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _panel(draw, font, box, epochs, series, y_range, title):
    """Line plot of ``series`` ({name: [values]}) over ``epochs`` in ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    left, bottom, top, right = x0 + 52, y1 - 34, y0 + 24, x1 - 12
    draw.text((x0 + 52, y0 + 4), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    lo_x, hi_x = min(epochs), max(epochs)
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    lo_y, hi_y = y_range

    def to_px(ex, value):
        px = left + (ex - lo_x) / (hi_x - lo_x) * (right - left)
        py = bottom - (value - lo_y) / (hi_y - lo_y) * (bottom - top)
        return px, py

    for tick in _nice_ticks(lo_y, hi_y):
        _, py = to_px(lo_x, tick)
        draw.line([left, py, right, py], fill=(225, 225, 225))
        draw.text((x0 + 4, py - 6), f"{tick:g}", fill=(0, 0, 0), font=font)
    for tick in _nice_ticks(lo_x, hi_x):
        if float(tick).is_integer():
            px, _ = to_px(tick, lo_y)
            draw.line([px, bottom, px, bottom + 4], fill=(0, 0, 0))
            draw.text((px - 6, bottom + 6), f"{int(tick)}", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 16, bottom + 18), "epoch", fill=(0, 0, 0), font=font)
    legend_x = x0 + 52 + draw.textlength(title, font=font) + 24  # legend on the title line
    for name, values in series.items():
        colour = _CURVE_COLOURS.get(name, (127, 127, 127))
        points = [to_px(e, v) for e, v in zip(epochs, values) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points if len(points) < 40 else ():
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.line([legend_x, y0 + 11, legend_x + 16, y0 + 11], fill=colour, width=3)
        draw.text((legend_x + 20, y0 + 4), name, fill=(0, 0, 0), font=font)
        legend_x += 32 + draw.textlength(name, font=font)


def plot_training_curves(history_path, png_path, width=720):
    """Draw the losses (top) and ``val_mAP`` (bottom, when logged) per epoch from a
    CSVLogger ``history.csv`` into a PNG ``width`` pixels wide. Returns ``png_path``."""

    rows = read_history(history_path)
    if not rows:
        raise ValueError(f"no epochs in {history_path}")
    epochs = [r["epoch"] + 1 for r in rows]
    losses = {k: [r.get(k) for r in rows] for k in ("loss", "rpn_cls", "rpn_box", "cls", "box") if k in rows[0]}
    maps = [r.get("val_mAP", float("nan")) for r in rows]
    has_map = any(math.isfinite(v) for v in maps)
    height = 560 if has_map else 300
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    finite = [v for values in losses.values() for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=1.0)
    _panel(draw, font, (0, 0, width, 300), epochs, losses, (0.0, top * 1.05 or 1.0), "training losses")
    if has_map:
        best = max(v for v in maps if math.isfinite(v))
        _panel(draw, font, (0, 290, width, 560), epochs, {"val_mAP": maps}, (0.0, 1.0),
               f"validation mAP (best {best:.3f})")
    return _save_atomically(image, png_path)


# ------------------------------------------------------------------------------------------
# Dataset analysis (rcnn-zoo analyze)

def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _log2_histogram(draw, font, box, values, markers, title, x_label):
    """Bars of ``values`` (> 0) over log2 bins in ``box``; ``markers`` (values) as red lines."""
    x0, y0, x1, y1 = box
    left, bottom, top, right = x0 + 44, y1 - 34, y0 + 24, x1 - 12
    draw.text((left, y0 + 4), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    values = np.asarray(values, np.float64)
    values = values[values > 0]
    points = list(values) + [m for m in markers if m > 0]
    if not points:
        return
    lo, hi = math.floor(math.log2(min(points)) * 2) / 2, math.ceil(math.log2(max(points)) * 2) / 2 + 0.5
    edges = np.arange(lo, hi + 1e-9, 0.25)
    counts, _ = np.histogram(np.log2(values), bins=edges)
    peak = max(int(counts.max()), 1)

    def to_x(log_value):
        return left + (log_value - lo) / (hi - lo) * (right - left)

    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        if count:
            draw.rectangle([to_x(a) + 1, bottom - count / peak * (bottom - top - 4), to_x(b) - 1, bottom],
                           fill=(31, 119, 180))
    for marker in markers:
        if marker > 0:
            px = to_x(math.log2(marker))
            draw.line([px, top, px, bottom], fill=(214, 39, 40), width=2)
    for k in range(math.ceil(lo), math.floor(hi) + 1):
        px = to_x(k)
        draw.line([px, bottom, px, bottom + 4], fill=(0, 0, 0))
        label = f"{2 ** k:g}" if k >= 0 else f"1/{2 ** -k:g}"
        draw.text((px - 8, bottom + 6), label, fill=(0, 0, 0), font=font)
    draw.text((x0 + 4, top), f"{peak}", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 40, bottom + 18), x_label, fill=(0, 0, 0), font=font)


def _recall_bars(draw, font, box, rows, title):
    """Grouped bars of anchor recall at IoU 0.7 (dark) and 0.5 (light) per row name."""
    x0, y0, x1, y1 = box
    left, bottom, top, right = x0 + 44, y1 - 34, y0 + 24, x1 - 12
    draw.text((left, y0 + 4), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for tick in (0.0, 0.5, 1.0):
        py = bottom - tick * (bottom - top)
        draw.line([left, py, right, py], fill=(225, 225, 225))
        draw.text((x0 + 14, py - 6), f"{tick:g}", fill=(0, 0, 0), font=font)
    rows = [(name, r) for name, r in rows if r["boxes"]]
    if not rows:
        return
    slot = (right - left) / len(rows)
    for i, (name, r) in enumerate(rows):
        base = left + i * slot
        for j, (key, colour) in enumerate((("recall@0.7", (31, 119, 180)), ("recall@0.5", (158, 202, 225)))):
            bx = base + slot * (0.15 + 0.35 * j)
            draw.rectangle([bx, bottom - r[key] * (bottom - top), bx + slot * 0.33, bottom], fill=colour)
        draw.text((base + 4, bottom + 6), f"{name[:12]} ({r['boxes']})", fill=(0, 0, 0), font=font)


def plot_dataset_analysis(result, png_path, width=900):
    """Draw :func:`rcnn_zoo.data.analysis.analyze`'s result into a PNG: resized box sizes and
    aspect ratios (log2 histograms, the anchors' sizes and ratios in red) and, with anchors,
    the anchor recall per size bucket and per class. Returns ``png_path``."""
    boxes, report = result["boxes"], result.get("anchors")
    panels = 3 if report is not None else 2
    height = 230 * panels + (230 if report is not None else 0)
    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), _font()

    sizes = flat_numbers(report["sizes"]) if report is not None else []
    ratios = flat_numbers(report["aspect_ratios"]) if report is not None else []
    _log2_histogram(draw, font, (0, 0, width, 230), boxes["_sizes_resized"], sizes,
                    f"box size sqrt(w*h) after the resize: {boxes['count']} boxes (red: anchor sizes)",
                    "pixels, log scale")
    _log2_histogram(draw, font, (0, 230, width, 460), boxes["_aspect_ratios"], ratios,
                    "box aspect ratio h/w (red: anchor aspect ratios)", "h/w, log scale")
    if report is not None:
        overall = report["overall"]
        _recall_bars(draw, font, (0, 460, width, 690), [(r["size"], r) for r in report["per_size"]],
                     f"anchor recall per size (dark IoU>=0.7 {overall['recall@0.7']:.3f}, "
                     f"light IoU>=0.5 {overall['recall@0.5']:.3f})")
        _recall_bars(draw, font, (0, 690, width, 920), [(r["class"], r) for r in report["per_class"]],
                     "anchor recall per class")
    return _save_atomically(image, png_path)
