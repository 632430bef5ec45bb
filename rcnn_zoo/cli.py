"""``rcnn-zoo``: train, evaluate, run and export detectors from the command line.

    rcnn-zoo demo
    rcnn-zoo train --data ../shared/datasets/raccoon --format voc --split train --val-split test \\
        --backbone tiny --epochs 80 --random-crop 0.5 --zoom-out 1.5 --jitter --output-dir runs/raccoon
    rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test
    rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections
    rcnn-zoo export --model runs/raccoon/best.keras --output serving/raccoon/1
    rcnn-zoo convert --from torchvision --input x.pth --output coco.weights.h5

This module is the argument parser and thin handlers only. What each subcommand does is a library
function that scripts call directly (see ``examples/train_custom_voc.py``):

- train: :class:`rcnn_zoo.training.TrainConfig` + :func:`rcnn_zoo.training.train` (input
  pipeline: :func:`rcnn_zoo.data.training_dataset`);
- evaluate: :func:`rcnn_zoo.data.load_dataset`, :func:`rcnn_zoo.inference.load_model`,
  :func:`rcnn_zoo.evaluation.evaluate_model`, :func:`rcnn_zoo.evaluation.format_ap_table`;
- predict: :func:`rcnn_zoo.inference.predict_images` (or ``model_from_weights_name``);
- export: :func:`rcnn_zoo.export_saved_model`; convert: :mod:`rcnn_zoo.convert.cli`; demo:
  :func:`rcnn_zoo.demo.run_demo`.

Errors in what the user typed (paths, formats, options) are raised by those functions as
:class:`rcnn_zoo.errors.UsageError`; :func:`main` prints one line on stderr and exits with code
2; ``--debug`` shows the traceback instead.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings

from rcnn_zoo.data.loading import FORMATS, default_split, load_dataset
from rcnn_zoo.data.pipeline import DatasetWarning
from rcnn_zoo.errors import UsageError, check_number
from rcnn_zoo.evaluation import METRICS, evaluate_model, format_ap_table
from rcnn_zoo.export import INPUT_TYPES as EXPORT_INPUT_TYPES
from rcnn_zoo.export import export_saved_model
from rcnn_zoo.inference import list_images, load_model, model_from_weights_name, predict_images
from rcnn_zoo.models.registry import DETECTORS
from rcnn_zoo.training import CLI_ANCHOR_SIZES, CLI_IMAGE_SIZES, DETECTOR_TRAINING, TrainConfig, train
from rcnn_zoo.utils import write_json

PROG = "rcnn-zoo"
EXIT_USAGE = 2


# ==========================================================================================
# Subcommand handlers (each returns an exit code)


def _run_demo(args):
    from rcnn_zoo.demo import run_demo  # noqa: PLC0415

    kwargs = {} if args.seed is None else {"seed": args.seed}
    run_demo(args.output, **kwargs)
    return 0


def _given_options(parser, argv):
    """``dest`` of every option of ``parser`` that appears in ``argv``."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(token == option or token.startswith(option + "=") for token in argv):
                given.add(action.dest)
    return given


def _run_train(args):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    previous = os.path.join(args.output_dir, "config.json")
    if args.resume and os.path.isfile(previous):
        # Options not given again keep the first run's values.
        with open(previous, encoding="utf-8") as handle:
            earlier = json.load(handle).get("arguments", {})
        given = _given_options(args._train_parser, args._argv)
        values.update({k: v for k, v in earlier.items() if k in fields and k not in given
                       and k not in ("resume", "output_dir")})
    train(TrainConfig(**values))
    return 0


def _evaluation_data(args, class_names):
    split = args.split
    if args.format == "voc" and split is None and args.data and os.path.isdir(args.data):
        split = default_split(args.data, "test")
    return load_dataset(args.data, args.format, split, args.annotations, args.images, class_names)


def _run_evaluate(args):
    check_number("iou_threshold", args.iou_threshold, above=0, maximum=1)
    if not os.path.isfile(args.model):
        raise UsageError(f"model file not found: {args.model}")
    if args.format == "voc" and args.data is None:
        raise UsageError("--data is required: the VOC dataset folder")
    if args.format == "voc" and not os.path.isdir(args.data):
        raise UsageError(f"dataset folder not found: {args.data}")
    model = load_model(args.model)
    if model.class_names is None:
        raise UsageError(f"{args.model} has no class_names; cannot match its labels to the data's classes")
    dataset = _evaluation_data(args, model.class_names)
    print(f"Evaluating {args.model} on {dataset.source}: {len(dataset)} images.")
    results = evaluate_model(model, dataset, args.metric, args.iou_threshold, verbose=args.verbose,
                             proposal_cache=_proposal_cache(args.model))
    print(format_ap_table(results))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, {"model": os.path.abspath(args.model), "data": dataset.source, **results})
        print(f"Wrote {args.output}")
    return 0


def _proposal_cache(model_path):
    """The selective search cache ``rcnn-zoo train`` left next to a model (``proposals/`` in its
    output folder), or None: evaluating on the training or validation images then reads their
    proposals instead of searching again."""
    folder = os.path.join(os.path.dirname(os.path.abspath(model_path)), "proposals")
    return folder if os.path.isdir(folder) else None


def _scores_are_margins(model):
    """R-CNN with its SVMs scores detections with unbounded margins, not probabilities."""
    return getattr(model, "classifier", None) == "svm"


def _run_predict(args):
    # Probabilities are in [0, 1]; an R-CNN's SVM margins take any finite threshold (its own is
    # −1), so a finite one outside [0, 1] with a --model file is judged once the model is read.
    margins_possible = (args.weights is None and args.model is not None and os.path.isfile(args.model)
                        and math.isfinite(args.score_threshold))
    if not margins_possible:
        check_number("score_threshold", args.score_threshold, minimum=0, maximum=1)
    if (args.model is None) == (args.weights is None):
        raise UsageError("give exactly one of --model FILE.keras and --weights NAME")
    import warnings  # noqa: PLC0415

    from rcnn_zoo.inference import UnreadableImageWarning  # noqa: PLC0415

    model = None
    if not 0 <= args.score_threshold <= 1:  # only for margins: the model decides, before the images
        model = load_model(args.model)
        if not _scores_are_margins(model):
            check_number("score_threshold", args.score_threshold, minimum=0, maximum=1)
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
    given = dict(zip((os.path.abspath(p) for p in image_paths), image_paths))
    by_reason = {}
    for item in failed:
        by_reason.setdefault(item["error"], []).append(given.get(item["image"], item["image"]))
    for reason, paths in by_reason.items():
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        files = "file" if len(paths) == 1 else "files"
        print(f"{PROG}: warning: skipped {len(paths)} {files} ({reason}): {', '.join(paths[:3])}{more}",
              file=sys.stderr)
    _error(f"{len(failed)} of {len(image_paths)} image files could not be read (skipped; listed with "
           f"their \"error\" in {json_path})")
    return EXIT_USAGE


def _run_export(args):
    if args.input_type not in EXPORT_INPUT_TYPES:
        raise UsageError(f"--input-type must be one of {', '.join(EXPORT_INPUT_TYPES)}")
    model = load_model(args.model)
    try:
        export_saved_model(model, args.output, input_type=args.input_type)
    except ValueError as error:  # the output path is taken, or the model cannot be exported
        raise UsageError(str(error).splitlines()[0]) from error
    return 0


def _run_convert_missing(args):
    raise UsageError("checkpoint conversion is not installed in this copy of rcnn_zoo (rcnn_zoo.convert.cli)")


# ==========================================================================================
# Parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows defaults that say something (not None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not quiet and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _wrap(text, width=88):
    """Fill each paragraph of ``text`` (the formatter keeps descriptions as written)."""
    import textwrap  # noqa: PLC0415

    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def _subparser(subparsers, name, help, description, examples, parents):
    return subparsers.add_parser(
        name, help=help, description=_wrap(description), epilog="examples:\n" + examples,
        formatter_class=_Formatter, parents=parents,
    )


def _add_data_arguments(parser, split_help):
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="VOC: dataset folder (devkit VOC2007 or images/ + annotations/ "
                       "+ <split>.txt). COCO: folder the --annotations/--images paths are relative "
                       "to, or the instances JSON itself")
    group.add_argument("--format", choices=FORMATS, default="voc", help="annotation format")
    group.add_argument("--split", help=split_help)
    group.add_argument("--annotations", help="COCO: instances JSON")
    group.add_argument("--images", help="COCO: image folder (default: the JSON's folder)")
    return group


def build_parser():
    """The ``rcnn-zoo`` argument parser (subcommands demo, train, evaluate, predict, export,
    convert)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks instead of one-line errors")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_wrap("Two-stage object detectors (Faster R-CNN, R-FCN, Fast R-CNN, R-CNN) for Keras 3: "
                          "train on VOC or COCO format data, evaluate mAP, draw detections, export for TF "
                          "Serving."),
        epilog="examples:\n"
        "  rcnn-zoo demo\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --val-split test --epochs 80 --output-dir runs/raccoon\n"
        "  rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test\n"
        "  rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections\n"
        "  rcnn-zoo <command> --help    (every command explains its options)",
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True

    # demo
    demo = _subparser(
        subparsers, "demo", "detect shapes in generated pictures with the bundled demo model",
        "Runs the small 'shapes' Faster R-CNN (tiny backbone, trained from scratch on generated "
        "circles, squares and triangles; trained now, about two minutes, if its weights are "
        "missing) on new pictures and draws the detections side by side into one PNG.",
        "  rcnn-zoo demo\n  rcnn-zoo demo --output shapes.png --seed 7\n", [common])
    demo.add_argument("--output", default="demo_detections.png", help="PNG to write")
    demo.add_argument("--seed", type=int, default=None, help="seed of the generated pictures (default: the demo's)")
    demo.set_defaults(func=_run_demo)

    # train
    defaults = TrainConfig()
    train_parser = _subparser(
        subparsers, "train", "train a detector on a VOC or COCO format dataset",
        "Train a detector (--detector: Faster R-CNN by default, R-FCN, Fast R-CNN or R-CNN) on "
        "your data: from scratch, or fine-tuned from registered or saved "
        "weights with --model-arg weights=NAME_OR_FILE (backbone and anchors must match those "
        "weights; the class predictor is re-initialised when the class count differs).\n\n"
        "Writes into --output-dir: last.keras (after every epoch), best.keras (best validation "
        "mAP, when a validation split is given), history.csv (losses, lr, val_mAP per epoch), "
        "training_curves.png and config.json (these arguments and the class names).\n\n"
        "Interrupted? Run the same command again: it continues from the last finished epoch "
        "(backup/ in the output folder). Finished, and want more epochs? Add --resume and a "
        "larger --epochs: training continues from last.keras, its optimizer state included, "
        "with the options of the first run (config.json) except those given again, and the "
        "cosine learning-rate curve is stretched to the new length.",
        "  # a VOC-style folder (images/, annotations/, train.txt, test.txt), small CPU model\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --format voc --split train --val-split test \\\n"
        "      --backbone tiny --epochs 80 --random-crop 0.5 --zoom-out 1.5 --jitter --val-every 5 \\\n"
        "      --output-dir runs/raccoon\n"
        "  # the same run, 40 more epochs (options not given are taken from runs/raccoon/config.json)\n"
        "  rcnn-zoo train --output-dir runs/raccoon --resume --epochs 120\n"
        "  # R-FCN, or Fast R-CNN on selective search proposals (cached in runs/fast/proposals/)\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --detector rfcn --output-dir runs/rfcn\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --detector fast_rcnn --output-dir runs/fast\n"
        "  # COCO format\n"
        "  rcnn-zoo train --format coco --annotations train.json --images train/ \\\n"
        "      --val-annotations val.json --val-images val/ --backbone resnet50_fpn --output-dir runs/coco\n",
        [common])
    group = _add_data_arguments(train_parser, "VOC training split: a name (<data>/<split>.txt or "
                                "ImageSets/Main/<split>.txt) or a file of stems (default: 'train' "
                                "if such a file exists, else every XML)")
    group.add_argument("--val-split", help="VOC validation split (enables val mAP and best.keras)")
    group.add_argument("--val-annotations", help="COCO validation JSON (enables val mAP and best.keras)")
    group.add_argument("--val-images", help="COCO validation image folder")
    group = train_parser.add_argument_group("model")
    trains = "; ".join(f"{name}: {DETECTOR_TRAINING[name]}" for name in DETECTORS).replace("%", "%%")
    group.add_argument("--detector", default=defaults.detector, metavar="NAME",
                       help=f"one of {', '.join(DETECTORS)}. How each trains: {trains}")
    from_backbones = "vgg16, resnet50, resnet101, resnet50_fpn, mobilenet_v3_large_fpn, tiny"
    group.add_argument("--backbone", default=defaults.backbone,
                       help=f"one of {from_backbones}; without network only 'tiny' is practical on a CPU "
                       "(the others are large to train from scratch)")
    group.add_argument("--image-min-size", type=int, default=None,
                       help="resize so the shorter side is this (default: the backbone's; tiny: "
                       f"{CLI_IMAGE_SIZES['tiny'][0]})")
    group.add_argument("--image-max-size", type=int, default=None,
                       help="... unless the longer side would exceed this (default: the backbone's; tiny: "
                       f"{CLI_IMAGE_SIZES['tiny'][1]})")
    group.add_argument("--anchor-sizes", type=float, nargs="+", default=None, metavar="PX",
                       help="anchor sizes in pixels of the resized image (single-level backbones: all "
                       "on one level; FPN: one per level). Match them to your objects (default: the "
                       f"backbone's; tiny: {' '.join(map(str, CLI_ANCHOR_SIZES['tiny']))})")
    group.add_argument("--model-arg", dest="model_args", action="append", metavar="KEY=VALUE",
                       help="any other argument of the detector's class (FasterRCNN, RFCN, FastRCNN, "
                       "RCNN), value as JSON, e.g. rpn_post_nms_top_n_test=50 or roi_head_dim=256; "
                       "R-CNN: warp_size=32 or max_proposals=200 (repeatable)")
    group = train_parser.add_argument_group("schedule")
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="total epochs")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    group.add_argument("--optimizer", choices=("adam", "sgd"), default=defaults.optimizer,
                       help="adam (AdamW when --weight-decay > 0) or sgd (momentum 0.9)")
    group.add_argument("--lr", type=float, default=defaults.lr,
                       help="peak learning rate: linear warm-up from 10%% then cosine decay to 1%%")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="decoupled weight decay")
    group.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs, help="warm-up length")
    group.add_argument("--seed", type=int, default=defaults.seed, help="random seed (weights, shuffling, augmentation)")
    group = train_parser.add_argument_group("augmentation")
    group.add_argument("--flip", type=float, default=defaults.flip, help="probability of a horizontal flip")
    group.add_argument("--jitter", action="store_true", help="random brightness, contrast, saturation and hue")
    group.add_argument("--random-crop", type=float, default=defaults.random_crop, metavar="P",
                       help="probability of cropping a random window (boxes whose centre is inside are kept)")
    group.add_argument("--crop-min-scale", type=float, default=defaults.crop_min_scale,
                       help="smallest crop side, as a fraction of the image side")
    group.add_argument("--zoom-out", type=float, default=defaults.zoom_out, metavar="RATIO",
                       help="half of the images are placed on a canvas up to RATIO times larger (1 = off)")
    group = train_parser.add_argument_group("validation and output")
    group.add_argument("--val-every", type=int, default=defaults.val_every, help="compute val mAP every N epochs")
    group.add_argument("--metric", choices=METRICS, default=defaults.metric,
                       help="validation metric: voc (all-points AP@0.5), voc07 (11-point), coco (AP@[.5:.95])")
    group.add_argument("--output-dir", default=defaults.output_dir, help="where models, history and plots go")
    group.add_argument("--resume", action="store_true", help="continue a finished run from last.keras")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=defaults.verbose,
                       help="Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    train_parser.set_defaults(func=_run_train, _train_parser=train_parser)

    # evaluate
    evaluate = _subparser(
        subparsers, "evaluate", "per-class AP and mAP of a trained model on a dataset",
        "Predict on every image of a split and print a per-class AP table with the mean. The "
        "model's class names are matched to the dataset's by name. Pixel convention: boxes are "
        "compared as continuous coordinates, which on VOC data equals the official VOC "
        "evaluator's +1 convention (see rcnn_zoo.evaluation.voc).",
        "  rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test\n"
        "  rcnn-zoo evaluate --model best.keras --data VOCdevkit/VOC2007 --split test --metric voc07 voc\n"
        "  rcnn-zoo evaluate --model best.keras --format coco --annotations instances_val2017.json \\\n"
        "      --images val2017/ --metric coco --output results.json\n", [common])
    evaluate.add_argument("--model", required=True, help="a .keras file written by training (best.keras)")
    _add_data_arguments(evaluate, "VOC split to evaluate (default: 'test' if such a file exists, else every XML)")
    evaluate.add_argument("--metric", nargs="+", choices=METRICS, default=["voc"],
                          help="one or more of voc (all-points AP, VOC2010+), voc07 (11-point), coco")
    evaluate.add_argument("--iou-threshold", type=float, default=0.5, help="IoU for the VOC metrics")
    evaluate.add_argument("--output", help="also write the results as JSON here")
    evaluate.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar")
    evaluate.set_defaults(func=_run_evaluate)

    # predict
    predict = _subparser(
        subparsers, "predict", "draw detections on images and write them as JSON",
        "Run a detector on image files or folders. Writes <image name>.png with the boxes drawn "
        "and detections.json: per image its boxes [x1, y1, x2, y2] in original pixels, scores, "
        "labels and class names, for detections scoring at least --score-threshold.\n\n"
        "A file that cannot be read as an image (empty, truncated, not an image) is skipped and "
        "the others are processed; detections.json lists it as {\"image\": path, \"error\": "
        "reason}, a warning names it, and the exit code is 2.",
        "  rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections\n"
        "  rcnn-zoo predict --model best.keras --images a.jpg b.png --output-dir out --score-threshold 0.3\n"
        "  rcnn-zoo predict --weights shapes --images shapes.png --output-dir out   # a registered weight\n",
        [common])
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--model", help="a .keras file written by training")
    source.add_argument("--weights", help="a registered weight name (weights/registry.json, e.g. shapes, voc, coco)")
    predict.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    predict.add_argument("--output-dir", required=True, help="where PNGs and detections.json go")
    predict.add_argument("--score-threshold", type=float, default=0.5,
                         help="drop detections scoring less (in [0, 1]; any number for an R-CNN "
                         "scoring with SVM margins)")
    predict.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar")
    predict.set_defaults(func=_run_predict)

    # export
    export = _subparser(
        subparsers, "export", "write a SavedModel for TensorFlow Serving",
        "Export a trained detector as a SavedModel with the TF Object Detection API's signature "
        "(detection_boxes normalised [ymin, xmin, ymax, xmax], detection_scores, 1-based "
        "detection_classes, num_detections) using stock TensorFlow ops only. Fast R-CNN and "
        "R-CNN models take a second input, proposals [B, R, 4] (each image's own pixels, "
        "zero-padded), which the client computes (e.g. rcnn_zoo.proposals.selective_search).",
        "  rcnn-zoo export --model runs/raccoon/best.keras --output serving/raccoon/1\n"
        "  rcnn-zoo export --model best.keras --output serving/raccoon/1 --input-type encoded_image_string_tensor\n",
        [common])
    export.add_argument("--model", required=True, help="a .keras file written by training")
    export.add_argument("--output", required=True, help="SavedModel directory (TF Serving wants <name>/<version>)")
    export.add_argument("--input-type", choices=EXPORT_INPUT_TYPES, default="image_tensor",
                        help="uint8 images, JPEG/PNG bytes, or float32 images")
    export.set_defaults(func=_run_export)

    # convert (its own module, when present)
    try:
        from rcnn_zoo.convert.cli import add_convert_parser  # noqa: PLC0415
    except ImportError:
        add_convert_parser = None
    if add_convert_parser is not None:
        convert = add_convert_parser(subparsers)
        if "--debug" not in convert._option_string_actions:
            convert.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show full tracebacks instead of one-line errors")
    else:
        convert = _subparser(
            subparsers, "convert", "convert PyTorch checkpoints (not installed)",
            "Checkpoint conversion (rcnn_zoo.convert.cli) is not part of this installation.",
            "  rcnn-zoo convert --from torchvision --input x.pth --output y.weights.h5\n", [common])
        convert.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        convert.set_defaults(func=_run_convert_missing)
    return parser


def _error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings about the user's data as ``rcnn-zoo: warning: …`` lines (no source line)."""
    if issubclass(category, DatasetWarning):
        sys.stdout.flush()  # what was printed before comes before the warning
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
        return
    _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv=None):
    """Entry point of the ``rcnn-zoo`` console script; returns the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    args._argv = argv
    debug = getattr(args, "debug", False)
    shown_before = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        code = args.func(args)
    except UsageError as error:
        if debug:
            raise
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted" + ("; run the same command again to resume" if args.command == "train" else ""))
        return 130
    finally:
        warnings.showwarning = shown_before
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
