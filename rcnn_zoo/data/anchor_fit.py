"""Anchors fitted to a dataset: the sizes and aspect ratios that maximise the anchor recall.

The anchor count per location stays what the detector has (its RPN head's outputs do not
change shape); only the sizes and/or ratios move. The objective is the recall at IoU ≥ 0.7
(boxes the RPN trains on positive anchors) plus the recall at ≥ 0.5 (boxes it still reaches
with a good anchor: the sum keeps a few boxes from being given up for the 0.7 recall of
others), the mean best IoU breaking ties — measured on the training boxes after the
detector's resize.

Evaluating a candidate needs the best IoU of every box with every anchor of its image, which
:func:`rcnn_zoo.data.analysis.best_anchor_iou` computes over the whole grid. The search uses an
exact shortcut instead: for a fixed anchor shape, the IoU with a box depends only on the offset
between their centres, and the overlap on each axis shrinks as that offset grows, so the best
anchor of that shape is the grid cell nearest to the box's centre on each axis (clamped to the
grid). One IoU per box and cell anchor, instead of one per anchor of the grid (the test checks
it equals the whole-grid computation).

The search is coordinate ascent on a log scale (quarter-octave steps): each size, then each
ratio, takes the value that scores best with the others fixed, until a round changes nothing.
Sizes stay sorted (an FPN level keeps a larger anchor than the level below).
"""

import numpy as np

from rcnn_zoo.data.analysis import FeatureGrids, resize_rule, resized_boxes
from rcnn_zoo.data.stages import resized_size
from rcnn_zoo.layers import AnchorGenerator
from rcnn_zoo.utils import flat_numbers

__all__ = ["AUTO", "AnchorGrid", "fit_anchors", "format_anchor_fit"]

AUTO = "auto"  # the value of --anchor-sizes / --aspect-ratios that asks for a fit

_SIZE_STEPS = np.round(2.0 ** (np.arange(8, 45) / 4.0), 1)  # 4 px … 2048 px, 0.1 px
_RATIO_STEPS = np.round(2.0 ** (np.arange(-8, 9) / 4.0), 3)  # h/w 1/4 … 4
_MAX_ROUNDS = 6


class AnchorGrid:
    """The training boxes of ``dataset`` after ``model``'s resize, with each image's anchor grid
    (cells and spacing per level), to score anchor configurations of ``model``'s generator."""

    def __init__(self, dataset, model, image_min_size=None, image_max_size=None):
        self.generator = model.rpn.anchor_generator
        min_size, max_size = resize_rule(model, image_min_size, image_max_size)
        grids, rows = FeatureGrids(model), []
        for record in dataset.records:
            height, width = resized_size(int(record.height), int(record.width), min_size, max_size)
            padded, shapes = grids(height, width)
            rows += [(box, padded, shapes) for box in resized_boxes(record, height, width)]
        self.boxes = np.array([r[0] for r in rows], np.float64).reshape(-1, 4)
        levels = len(grids.names)
        self.cells = np.array([r[2] for r in rows], np.float64).reshape(-1, levels, 2)  # (H_l, W_l)
        strides = np.array(self.generator.strides, np.float64).reshape(1, levels, 1)
        if self.generator.stride_rule == "image_over_grid":
            image = np.array([r[1] for r in rows], np.float64).reshape(-1, 1, 2)
            self.spacing = np.floor(image / np.maximum(self.cells, 1))
        else:
            self.spacing = np.broadcast_to(strides, self.cells.shape).copy()

    def __len__(self):
        return len(self.boxes)

    def best_iou(self, generator):
        """Best IoU of every box ``[n]`` with the anchors ``generator`` (same levels and
        strides as the model's) puts on each box's image."""
        best = np.zeros(len(self.boxes))
        x1, y1, x2, y2 = (self.boxes[:, i:i + 1] for i in range(4))
        box_area = (x2 - x1) * (y2 - y1)
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        offset = float(generator.offset)
        for level in range(generator.num_levels):
            cell = generator.cell_anchors(level).astype(np.float64)  # [A, 4] at shift 0
            sy, sx = self.spacing[:, level, 0:1], self.spacing[:, level, 1:2]
            rows, cols = self.cells[:, level, 0:1], self.cells[:, level, 1:2]
            anchor_cx, anchor_cy = (cell[:, 0] + cell[:, 2]) / 2, (cell[:, 1] + cell[:, 3]) / 2
            # The nearest cell on each axis, inside the grid: shift = (index + offset) · spacing.
            ix = np.clip(np.round((centre_x - anchor_cx) / sx - offset), 0, cols - 1)
            iy = np.clip(np.round((centre_y - anchor_cy) / sy - offset), 0, rows - 1)
            shift_x, shift_y = (ix + offset) * sx, (iy + offset) * sy
            ax1, ax2 = cell[:, 0] + shift_x, cell[:, 2] + shift_x
            ay1, ay2 = cell[:, 1] + shift_y, cell[:, 3] + shift_y
            iw = np.clip(np.minimum(x2, ax2) - np.maximum(x1, ax1), 0, None)
            ih = np.clip(np.minimum(y2, ay2) - np.maximum(y1, ay1), 0, None)
            inter = iw * ih
            union = box_area + (cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1]) - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            best = np.maximum(best, iou.max(axis=1))
        return best

    def recall(self, generator):
        """``(recall@0.7, recall@0.5, mean best IoU)`` of ``generator``'s anchors."""
        best = self.best_iou(generator)
        if best.size == 0:
            return (0.0, 0.0, 0.0)
        return (float(np.mean(best >= 0.7)), float(np.mean(best >= 0.5)), float(best.mean()))


def _objective(recall):
    """What the search maximises: recall@0.7 + recall@0.5, then the mean best IoU."""
    return (round(recall[0] + recall[1], 9), recall[2])


def _generator_like(generator, sizes, ratios):
    return AnchorGenerator(sizes=sizes, aspect_ratios=ratios, strides=generator.strides,
                           convention=generator.convention, offset=generator.offset,
                           stride_rule=generator.stride_rule)


def _flat_sizes(generator):
    """``(sizes, per_level)``: the sizes as one flat list, and whether there is one per level."""
    sizes = generator.sizes
    if isinstance(sizes[0], (list, tuple)):
        if generator.num_levels > 1:
            return [float(level[0]) for level in sizes], True  # one size per FPN level
        return [float(s) for s in sizes[0]], False
    return [float(s) for s in sizes], False


def _nested(sizes, per_level):
    return tuple((float(s),) for s in sizes) if per_level else (tuple(float(s) for s in sizes),)


def fit_anchors(dataset, model, fit_sizes=True, fit_ratios=True, image_min_size=None, image_max_size=None):
    """The anchor sizes and/or aspect ratios of ``model``'s generator that maximise the anchor
    recall on ``dataset``'s boxes (resized by ``model``'s rule, or the sizes given).

    Args:
        dataset: a :class:`~rcnn_zoo.data.DetectionDataset` (difficult objects left out).
        model: a detector with an RPN (its generator's levels, strides, convention, and the
            number of sizes and ratios, are kept).
        fit_sizes, fit_ratios: which of the two to choose (the other stays the model's).

    Returns:
        dict: ``sizes`` (nested per level, as the detectors take them), ``aspect_ratios``,
        ``before`` and ``after`` (``recall@0.7``, ``recall@0.5``, ``mean_best_iou``), ``boxes``.
    """
    grid = AnchorGrid(dataset, model, image_min_size, image_max_size)
    generator = grid.generator
    sizes, per_level = _flat_sizes(generator)
    ratios = [float(r) for r in (generator.aspect_ratios[0] if isinstance(generator.aspect_ratios[0], (list, tuple))
                                 else generator.aspect_ratios)]
    before = grid.recall(generator)
    best, score = before, _objective(before)

    def evaluate(candidate_sizes, candidate_ratios):
        return grid.recall(_generator_like(generator, _nested(sorted(candidate_sizes), per_level),
                                          tuple(candidate_ratios)))

    for _ in range(_MAX_ROUNDS if len(grid) else 0):
        changed = False
        for values, steps, fit in ((sizes, _SIZE_STEPS, fit_sizes), (ratios, _RATIO_STEPS, fit_ratios)):
            for i in range(len(values) if fit else 0):
                for step in steps:
                    trial = list(values)
                    trial[i] = float(step)
                    trial_recall = evaluate(trial, ratios) if values is sizes else evaluate(sizes, trial)
                    if _objective(trial_recall) > score:
                        values[i], best, score, changed = float(step), trial_recall, _objective(trial_recall), True
        sizes.sort()
        if not changed:
            break

    def named(s):
        return {"recall@0.7": round(s[0], 4), "recall@0.5": round(s[1], 4), "mean_best_iou": round(s[2], 4)}

    return {"sizes": _nested(sizes, per_level), "aspect_ratios": tuple(ratios), "boxes": len(grid),
            "before": named(before), "after": named(best),
            "before_sizes": generator.sizes, "before_aspect_ratios": generator.aspect_ratios}


def format_anchor_fit(fit):
    """One line per fitted quantity and the recall before → after, for the terminal."""
    before, after = fit["before"], fit["after"]
    lines = [f"Anchors fitted to the {fit['boxes']} training boxes (after the resize), same count per location:"]
    for name, old, new in (("sizes (px)", fit["before_sizes"], fit["sizes"]),
                           ("aspect ratios (h/w)", fit["before_aspect_ratios"], fit["aspect_ratios"])):
        old, new = flat_numbers(old), flat_numbers(new)
        if old != new:
            lines.append(f"  {name}: {' '.join(f'{v:g}' for v in old)} → {' '.join(f'{v:g}' for v in new)}")
    lines.append(f"  anchor recall at IoU 0.7: {before['recall@0.7']:.3f} → {after['recall@0.7']:.3f}; "
                 f"at 0.5: {before['recall@0.5']:.3f} → {after['recall@0.5']:.3f}")
    return "\n".join(lines)
