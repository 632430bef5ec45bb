"""``rcnn-zoo predict``: detections drawn on images and written as JSON
(:func:`rcnn_zoo.inference.predict_images`), from a ``.keras`` file or registered weights."""

import math
import os
import warnings

from rcnn_zoo.cli.messages import EXIT_USAGE, error, warning
from rcnn_zoo.errors import UsageError, check_number
from rcnn_zoo.inference import (
    UnreadableImageWarning,
    list_images,
    load_model,
    model_from_weights_name,
    predict_images,
)

__all__ = ["DESCRIPTION", "EXAMPLES", "HELP", "NAME", "add_arguments", "run"]

NAME = "predict"
HELP = "draw detections on images and write them as JSON"
DESCRIPTION = (
    "Run a detector on image files or folders. Writes <image name>.png with the boxes drawn "
    "and detections.json: per image its boxes [x1, y1, x2, y2] in original pixels, scores, "
    "labels and class names, for detections scoring at least --score-threshold.\n\n"
    "A file that cannot be read as an image (empty, truncated, not an image) is skipped and "
    "the others are processed; detections.json lists it as {\"image\": path, \"error\": "
    "reason}, a warning names it, and the exit code is 2."
)
EXAMPLES = (
    "  rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections\n"
    "  rcnn-zoo predict --model best.keras --images a.jpg b.png --output-dir out --score-threshold 0.3\n"
    "  rcnn-zoo predict --weights shapes --images shapes.png --output-dir out   # a registered weight\n"
)


def add_arguments(parser):
    """The options of ``rcnn-zoo predict``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a .keras file written by training")
    source.add_argument("--weights", help="a registered weight name (weights/registry.json, e.g. shapes, voc, coco)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--output-dir", required=True, help="where PNGs and detections.json go")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                         help="drop detections scoring less (in [0, 1]; any number for an R-CNN "
                         "scoring with SVM margins)")
    parser.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar")


def _scores_are_margins(model):
    """R-CNN with its SVMs scores detections with unbounded margins, not probabilities."""
    return getattr(model, "classifier", None) == "svm"


def _model_for_threshold(args):
    """Check ``--score-threshold`` and the model options before any image is read; returns the
    model when judging the threshold needed it (one outside [0, 1]), else None."""
    # Probabilities are in [0, 1]; an R-CNN's SVM margins take any finite threshold (its own is
    # −1), so a finite one outside [0, 1] with a --model file is judged once the model is read.
    margins_possible = (args.weights is None and args.model is not None and os.path.isfile(args.model)
                        and math.isfinite(args.score_threshold))
    if not margins_possible:
        check_number("score_threshold", args.score_threshold, minimum=0, maximum=1)
    if (args.model is None) == (args.weights is None):
        raise UsageError("give exactly one of --model FILE.keras and --weights NAME")
    if 0 <= args.score_threshold <= 1:
        return None
    model = load_model(args.model)  # only for margins: the model decides, before the images
    if not _scores_are_margins(model):
        check_number("score_threshold", args.score_threshold, minimum=0, maximum=1)
    return model


def _report_unreadable(failed, image_paths, json_path):
    """One warning line per reason files were skipped (naming up to three, as given), then the
    error line; returns the exit code."""
    given = dict(zip((os.path.abspath(p) for p in image_paths), image_paths))
    by_reason = {}
    for item in failed:
        by_reason.setdefault(item["error"], []).append(given.get(item["image"], item["image"]))
    for reason, paths in by_reason.items():
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        files = "file" if len(paths) == 1 else "files"
        warning(f"skipped {len(paths)} {files} ({reason}): {', '.join(paths[:3])}{more}")
    error(f"{len(failed)} of {len(image_paths)} image files could not be read (skipped; listed with "
          f"their \"error\" in {json_path})")
    return EXIT_USAGE


def run(args):
    """Write a PNG per image and detections.json into ``args.output_dir``; exit code 0, or 2
    when some files could not be read as images (the others are processed)."""
    model = _model_for_threshold(args)
    image_paths = list_images(args.images)
    if model is None:
        model = load_model(args.model) if args.model else model_from_weights_name(args.weights)
    with warnings.catch_warnings():  # reported below, one line per kind
        warnings.simplefilter("ignore", UnreadableImageWarning)
        results = predict_images(model, image_paths, args.output_dir, args.score_threshold, verbose=args.verbose)
    found = sum(len(r["scores"]) for r in results)
    json_path = os.path.join(args.output_dir, "detections.json")
    failed = getattr(results, "failed", [])
    of = f" of {len(image_paths)}" if failed else ""
    # flush: the warnings below go to stderr and must come after this line, not before it
    print(f"{found} detection(s) ≥ {args.score_threshold} in {len(results)}{of} image(s); wrote "
          f"{len(results)} PNG(s) and {json_path}", flush=True)
    if not failed:
        return 0
    return _report_unreadable(failed, image_paths, json_path)
