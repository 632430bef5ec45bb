"""``rcnn-zoo demo``: the README demo, :func:`rcnn_zoo.demo.run_demo`."""

from rcnn_zoo.demo import run_demo

__all__ = ["DESCRIPTION", "EXAMPLES", "HELP", "NAME", "add_arguments", "run"]

NAME = "demo"
HELP = "detect shapes in generated pictures with the bundled demo model"
DESCRIPTION = (
    "Runs the small 'shapes' Faster R-CNN (tiny backbone, trained from scratch on generated "
    "circles, squares and triangles; trained now, about two minutes, if its weights are "
    "missing) on new pictures and draws the detections side by side into one PNG."
)
EXAMPLES = "  rcnn-zoo demo\n  rcnn-zoo demo --output shapes.png --seed 7\n"


def add_arguments(parser):
    """The options of ``rcnn-zoo demo``."""
    parser.add_argument("--output", default="demo_detections.png", help="PNG to write")
    parser.add_argument("--seed", type=int, default=None, help="seed of the generated pictures (default: the demo's)")


def run(args):
    """Draw the demo's detections into ``args.output``; exit code 0."""
    kwargs = {} if args.seed is None else {"seed": args.seed}
    run_demo(args.output, **kwargs)
    return 0
