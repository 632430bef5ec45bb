"""``rcnn-zoo evaluate``: per-class AP and mAP of a trained model on a dataset
(:func:`rcnn_zoo.evaluation.evaluate_model`, :func:`rcnn_zoo.evaluation.format_ap_table`)."""

import os

from rcnn_zoo.cli.parsers import add_data_arguments
from rcnn_zoo.data import load_dataset
from rcnn_zoo.data.loading import default_split
from rcnn_zoo.errors import UsageError, check_number
from rcnn_zoo.evaluation import METRICS, evaluate_model, format_ap_table
from rcnn_zoo.inference import load_model
from rcnn_zoo.training.run_folder import proposal_cache_beside
from rcnn_zoo.utils import write_json

__all__ = ["DESCRIPTION", "EXAMPLES", "HELP", "NAME", "add_arguments", "run"]

NAME = "evaluate"
HELP = "per-class AP and mAP of a trained model on a dataset"
DESCRIPTION = (
    "Predict on every image of a split and print a per-class AP table with the mean. The "
    "model's class names are matched to the dataset's by name. Pixel convention: boxes are "
    "compared as continuous coordinates, which on VOC data equals the official VOC "
    "evaluator's +1 convention (see rcnn_zoo.evaluation.voc)."
)
EXAMPLES = (
    "  rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test\n"
    "  rcnn-zoo evaluate --model best.keras --data VOCdevkit/VOC2007 --split test --metric voc07 voc\n"
    "  rcnn-zoo evaluate --model best.keras --format coco --annotations instances_val2017.json \\\n"
    "      --images val2017/ --metric coco --output results.json\n"
)


def add_arguments(parser):
    """The options of ``rcnn-zoo evaluate``."""
    parser.add_argument("--model", required=True, help="a .keras file written by training (best.keras)")
    add_data_arguments(parser, "VOC split to evaluate (default: 'test' if such a file exists, else every XML)")
    parser.add_argument("--metric", nargs="+", choices=METRICS, default=["voc"],
                          help="one or more of voc (all-points AP, VOC2010+), voc07 (11-point), coco")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="IoU for the VOC metrics")
    parser.add_argument("--output", help="also write the results as JSON here")
    parser.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar")


def _check_paths(args):
    """Refuse a missing model file or VOC folder before anything is loaded."""
    if not os.path.isfile(args.model):
        raise UsageError(f"model file not found: {args.model}")
    if args.format == "voc" and args.data is None:
        raise UsageError("--data is required: the VOC dataset folder")
    if args.format == "voc" and not os.path.isdir(args.data):
        raise UsageError(f"dataset folder not found: {args.data}")


def _evaluation_data(args, class_names):
    split = args.split
    if args.format == "voc" and split is None and args.data and os.path.isdir(args.data):
        split = default_split(args.data, "test")
    return load_dataset(args.data, args.format, split, args.annotations, args.images, class_names)


def run(args):
    """Print the AP table of ``args.model`` on the data (and write it to ``args.output``);
    exit code 0."""
    check_number("iou_threshold", args.iou_threshold, above=0, maximum=1)
    _check_paths(args)
    model = load_model(args.model)
    if model.class_names is None:
        raise UsageError(f"{args.model} has no class_names; cannot match its labels to the data's classes")
    dataset = _evaluation_data(args, model.class_names)
    print(f"Evaluating {args.model} on {dataset.source}: {len(dataset)} images.")
    results = evaluate_model(model, dataset, args.metric, args.iou_threshold, verbose=args.verbose,
                             proposal_cache=proposal_cache_beside(args.model))
    print(format_ap_table(results))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, {"model": os.path.abspath(args.model), "data": dataset.source, **results})
        print(f"Wrote {args.output}")
    return 0
