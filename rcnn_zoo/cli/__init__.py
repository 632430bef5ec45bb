"""``rcnn-zoo``: train, evaluate, run and export detectors from the command line.

    rcnn-zoo demo
    rcnn-zoo analyze --data ../shared/datasets/raccoon --split train --anchor-sizes auto
    rcnn-zoo train --data ../shared/datasets/raccoon --format voc --split train --val-split test \\
        --backbone tiny --epochs 80 --random-crop 0.5 --zoom-out 1.5 --jitter --output-dir runs/raccoon
    rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test
    rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections
    rcnn-zoo export --model runs/raccoon/best.keras --output serving/raccoon/1
    rcnn-zoo convert --from torchvision --input x.pth --output coco.weights.h5

This package is the argument parsers and thin commands only: ``rcnn_zoo.cli.parsers`` (what every
parser is made of), ``rcnn_zoo.cli.messages`` (error and warning lines), then one module a
subcommand (``demo``, ``analyze``, ``train``, ``evaluate``, ``predict``, ``export``: its help texts, its
options and the function that runs it). What each subcommand does is a library function that
scripts call directly (see ``examples/train_custom_voc.py``):

- analyze: :func:`rcnn_zoo.data.analyze`, :func:`rcnn_zoo.data.anchor_fit.fit_anchors`
  (through :func:`rcnn_zoo.training.detectors.build_fitted_detector`);
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
import sys
import warnings

from rcnn_zoo.cli import analyze, demo, evaluate, export, predict, train
from rcnn_zoo.cli.messages import EXIT_USAGE, error, show_warning
from rcnn_zoo.cli.parsers import add_debug_option, add_subparser, program_parser
from rcnn_zoo.errors import UsageError

try:  # checkpoint conversion is a part a copy of rcnn_zoo may leave out
    from rcnn_zoo.convert.cli import add_convert_parser
    from rcnn_zoo.models.from_checkpoint import convert_checkpoint
except ImportError:
    add_convert_parser = convert_checkpoint = None

__all__ = ["build_parser", "main"]

# The subcommands in the order --help lists them (convert comes last, from its own module).
COMMANDS = (demo, analyze, train, evaluate, predict, export)


def build_parser():
    """The ``rcnn-zoo`` argument parser (subcommands demo, analyze, train, evaluate, predict, export,
    convert)."""
    parser, subparsers, common = program_parser()
    for command in COMMANDS:
        _add_command(subparsers, common, command)
    _add_convert_parser(subparsers, common)
    return parser


def _add_command(subparsers, common, command):
    """Subcommand ``command`` (a module: ``NAME``, ``HELP``, ``DESCRIPTION``, ``EXAMPLES``,
    ``add_arguments(parser)``, ``run(args)``) with ``common``'s options; ``run`` handles it."""
    parser = add_subparser(subparsers, command.NAME, command.HELP, command.DESCRIPTION, command.EXAMPLES,
                           [common])
    command.add_arguments(parser)
    parser.set_defaults(func=command.run)
    return parser


def _add_convert_parser(subparsers, common):
    """``convert`` from :mod:`rcnn_zoo.convert.cli` with the detector builder it needs, or a
    stand-in that says it is not installed (``common``: the parent parser of every subcommand)."""
    if add_convert_parser is not None:
        convert = add_convert_parser(subparsers, convert_checkpoint)
        if "--debug" not in convert._option_string_actions:
            add_debug_option(convert)
        return convert
    convert = add_subparser(
        subparsers, "convert", "convert PyTorch checkpoints (not installed)",
        "Checkpoint conversion (rcnn_zoo.convert.cli) is not part of this installation.",
        "  rcnn-zoo convert --from torchvision --input x.pth --output y.weights.h5\n", [common])
    convert.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    convert.set_defaults(func=_run_convert_missing)
    return convert


def _run_convert_missing(args):
    raise UsageError("checkpoint conversion is not installed in this copy of rcnn_zoo (rcnn_zoo.convert.cli)")


def main(argv=None):
    """Entry point of the ``rcnn-zoo`` console script; returns the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    args._argv = argv
    debug = getattr(args, "debug", False)
    shown_before = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        code = args.func(args)
    except UsageError as problem:
        if debug:
            raise
        error(str(problem))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        error("interrupted" + ("; run the same command again to resume" if args.command == "train" else ""))
        return 130
    finally:
        warnings.showwarning = shown_before
    return 0 if code is None else int(code)
