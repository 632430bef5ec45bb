"""``rcnn-zoo analyze``: what a dataset holds and how well a detector's anchors reach its boxes,
before training (:func:`rcnn_zoo.data.analysis.analyze`)."""

import os

from rcnn_zoo.cli.parsers import add_data_arguments
from rcnn_zoo.cli.train import add_model_options
from rcnn_zoo.data import load_dataset
from rcnn_zoo.data.analysis import analyze, format_analysis, json_ready
from rcnn_zoo.data.anchor_fit import format_anchor_fit
from rcnn_zoo.training import TrainConfig
from rcnn_zoo.training.detectors import build_fitted_detector, parse_model_args
from rcnn_zoo.utils import write_json
from rcnn_zoo.visualization import plot_dataset_analysis

__all__ = ["DESCRIPTION", "EXAMPLES", "HELP", "NAME", "add_arguments", "run"]

NAME = "analyze"
HELP = "class counts, box sizes and the anchors' recall on a dataset, before training"
DESCRIPTION = (
    "Read a dataset and print: objects and images per class; box sizes and aspect ratios in "
    "original pixels and after the detector's resize; image sizes and orientations; identical "
    "image files and repeated annotations; and, for detectors with anchors (Faster R-CNN, "
    "R-FCN), the anchor recall: the fraction of boxes that some anchor overlaps with IoU ≥ 0.7 "
    "(what the RPN trains as positive) and ≥ 0.5, overall, per class and per size (COCO "
    "buckets of the resized box). A box no anchor reaches is hard for the RPN to propose.\n\n"
    "The model options are those of rcnn-zoo train, with the same defaults: analyse with the "
    "options you will train with. Writes analysis.json and analysis.png (histograms with the "
    "anchor sizes and ratios marked, recall per size and class) into --output-dir. With "
    "--anchor-sizes auto and/or --aspect-ratios auto, the anchors are first fitted to these "
    "boxes (as rcnn-zoo train would fit them) and the recall before and after is shown."
)
EXAMPLES = (
    "  rcnn-zoo analyze --data ../shared/datasets/raccoon --split train\n"
    "  # the anchors of another configuration, e.g. smaller anchors for small objects\n"
    "  rcnn-zoo analyze --data my_photos --anchor-sizes 8 16 32 64 --image-min-size 480\n"
    "  # the anchors rcnn-zoo train --anchor-sizes auto --aspect-ratios auto would choose\n"
    "  rcnn-zoo analyze --data ../shared/datasets/raccoon --split train --anchor-sizes auto --aspect-ratios auto\n"
    "  rcnn-zoo analyze --data VOCdevkit/VOC2007 --split trainval --backbone resnet50_fpn\n"
)


def add_arguments(parser):
    """The options of ``rcnn-zoo analyze``."""
    add_data_arguments(parser, "VOC split to analyse (default: every XML)")
    add_model_options(parser.add_argument_group("model (as rcnn-zoo train builds it)"), TrainConfig())
    parser.add_argument("--output-dir", default="runs/analysis", help="where analysis.json and analysis.png go")
    parser.add_argument("--no-duplicates", action="store_true",
                        help="skip hashing every image file to find identical images")


def run(args):
    """Print the analysis of ``args.data`` for the model the options describe; write its JSON
    and PNG into ``args.output_dir``; exit code 0."""
    dataset = load_dataset(args.data, args.format, args.split, args.annotations, args.images,
                           check_images="header")
    model, fit = build_fitted_detector(dataset, args.backbone, args.image_min_size, args.image_max_size,
                                       args.anchor_sizes, args.aspect_ratios, parse_model_args(args.model_args),
                                       args.detector)
    result = analyze(dataset, model, duplicates=not args.no_duplicates)
    print(format_analysis(result))
    if fit is not None:
        print("\n" + format_anchor_fit(fit))
        result["anchor_fit"] = fit
    if "anchors" not in result:
        print(f"\n{args.detector} has no anchors (its proposals come from selective search): no anchor recall.")
    os.makedirs(args.output_dir, exist_ok=True)
    json_path = os.path.join(args.output_dir, "analysis.json")
    write_json(json_path, {"detector": args.detector, "backbone": args.backbone, **json_ready(result)})
    png_path = plot_dataset_analysis(result, os.path.join(args.output_dir, "analysis.png"))
    print(f"\nWrote {json_path} and {png_path}")
    return 0
