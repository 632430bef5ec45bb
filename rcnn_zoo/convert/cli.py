"""``rcnn-zoo convert``: a published PyTorch checkpoint → rcnn_zoo weights.

    rcnn-zoo convert --from torchvision --input fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \\
        --output coco.weights.h5 --bn-epsilon 0
    rcnn-zoo convert --from mmdet --input faster_rcnn_r50_fpn_1x_voc0712_20200624-c9895d40.pth \\
        --output voc.keras

The main CLI adds the subcommand with :func:`add_convert_parser`, giving it the function that
builds and fills the detector (:func:`rcnn_zoo.models.from_checkpoint.convert_checkpoint`): this
package sits below the models and builds none itself. :func:`run_convert` runs the parsed command.
"""

import json
import sys

from rcnn_zoo.convert import CheckpointFormatError, ConversionError, get_converter

SOURCES = ("torchvision", "torchvision_v2", "torchvision_mobilenet", "mmdet")
EXIT_USAGE = 2  # a checkpoint that cannot be read or converted: the user's input, as in rcnn-zoo


def add_convert_parser(subparsers, convert_checkpoint=None):
    """Add the ``convert`` subcommand to an ``argparse`` subparsers object; returns its parser.

    ``convert_checkpoint(source, input_path, output_path, num_classes=..., **options)`` builds the
    detector and converts into it (:func:`rcnn_zoo.models.from_checkpoint.convert_checkpoint`);
    it travels in the parsed arguments to :func:`run_convert`.
    """
    parser = subparsers.add_parser(
        "convert",
        help="convert a torchvision / MMDetection Faster R-CNN checkpoint (.pth) to rcnn_zoo weights",
        description=(
            "Read a PyTorch .pth checkpoint without PyTorch (restricted unpickling), map it onto "
            "rcnn_zoo's FasterRCNN (resnet50_fpn, resnet50_fpn_v2 or mobilenet_v3_large_fpn) and "
            "write .weights.h5 or .keras."
        ),
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_convert, convert_checkpoint=convert_checkpoint)
    return parser


def _add_arguments(parser):
    parser.add_argument(
        "--from", dest="source", required=True, choices=SOURCES,
        help="checkpoint family: torchvision fasterrcnn_resnet50_fpn, _v2 or _mobilenet_v3_large(_320)_fpn, "
        "or MMDetection 2.x faster_rcnn_r50_fpn",
    )
    parser.add_argument("--input", required=True, help="the .pth file")
    parser.add_argument(
        "--output", required=True,
        help="*.weights.h5 (load into a FasterRCNN built with the printed arguments) or *.keras "
        "(whole model, load with keras.saving.load_model)",
    )
    parser.add_argument(
        "--num-classes", type=int, default=None,
        help="foreground classes of the result (default: the checkpoint's); a different count "
        "converts everything except the class predictor, which is left initialised for fine-tuning",
    )
    parser.add_argument(
        "--bn-epsilon", type=float, default=None,
        help="the source's batch-norm epsilon (default 1e-5; torchvision's 2019 COCO checkpoint "
        "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth runs with 0)",
    )


def run_convert(args):
    """Run the conversion described by ``args`` (parsed by :func:`add_convert_parser`'s parser);
    returns a process exit code (0, or 2 when the input is missing or not a checkpoint that
    converts)."""
    convert_checkpoint = getattr(args, "convert_checkpoint", None)
    if convert_checkpoint is None:  # a program error: the command was added without a builder
        raise TypeError(
            "rcnn-zoo convert was added without a detector builder: call add_convert_parser("
            "subparsers, rcnn_zoo.models.from_checkpoint.convert_checkpoint)"
        )
    converter = get_converter(args.source)
    options = {} if args.bn_epsilon is None else {"bn_epsilon": args.bn_epsilon}
    try:
        model = convert_checkpoint(
            args.source, args.input, args.output, num_classes=args.num_classes, **options
        )
    except (FileNotFoundError, CheckpointFormatError, ConversionError) as error:
        print(f"rcnn-zoo convert: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    arguments = converter.model_arguments(model.num_classes)
    print(f"Wrote {args.output} ({len(model.weights)} variables) from {args.input}.")
    if not str(args.output).endswith(".keras"):
        print("Load it into a detector built with these arguments:")
        print(f"  FasterRCNN(**{json.dumps(arguments)}, weights={str(args.output)!r})")
    return 0
