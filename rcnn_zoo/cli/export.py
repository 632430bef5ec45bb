"""``rcnn-zoo export``: a SavedModel for TensorFlow Serving, :func:`rcnn_zoo.export_saved_model`."""

from rcnn_zoo.errors import UsageError
from rcnn_zoo.export import INPUT_TYPES as EXPORT_INPUT_TYPES
from rcnn_zoo.export import export_saved_model
from rcnn_zoo.inference import load_model

__all__ = ["DESCRIPTION", "EXAMPLES", "HELP", "NAME", "add_arguments", "run"]

NAME = "export"
HELP = "write a SavedModel for TensorFlow Serving"
DESCRIPTION = (
    "Export a trained detector as a SavedModel with the TF Object Detection API's signature "
    "(detection_boxes normalised [ymin, xmin, ymax, xmax], detection_scores, 1-based "
    "detection_classes, num_detections) using stock TensorFlow ops only. Fast R-CNN and "
    "R-CNN models take a second input, proposals [B, R, 4] (each image's own pixels, "
    "zero-padded), which the client computes (e.g. rcnn_zoo.proposals.selective_search)."
)
EXAMPLES = (
    "  rcnn-zoo export --model runs/raccoon/best.keras --output serving/raccoon/1\n"
    "  rcnn-zoo export --model best.keras --output serving/raccoon/1 --input-type encoded_image_string_tensor\n"
)


def add_arguments(parser):
    """The options of ``rcnn-zoo export``."""
    parser.add_argument("--model", required=True, help="a .keras file written by training")
    parser.add_argument("--output", required=True, help="SavedModel directory (TF Serving wants <name>/<version>)")
    parser.add_argument("--input-type", choices=EXPORT_INPUT_TYPES, default="image_tensor",
                        help="uint8 images, JPEG/PNG bytes, or float32 images")


def run(args):
    """Export ``args.model`` to ``args.output``; exit code 0."""
    if args.input_type not in EXPORT_INPUT_TYPES:
        raise UsageError(f"--input-type must be one of {', '.join(EXPORT_INPUT_TYPES)}")
    model = load_model(args.model)
    try:
        export_saved_model(model, args.output, input_type=args.input_type)
    except ValueError as error:  # the output path is taken, or the model cannot be exported
        raise UsageError(str(error).splitlines()[0]) from error
    return 0
