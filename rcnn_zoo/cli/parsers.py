"""The pieces every ``rcnn-zoo`` parser is made of: the help formatter, the ``rcnn-zoo`` parser
itself, a subcommand's parser with its examples, ``--debug`` and the data options.

Each subcommand's own options are in its module (``rcnn_zoo.cli.train`` …).
"""

import argparse
import textwrap

from rcnn_zoo.cli.messages import PROG
from rcnn_zoo.data import FORMATS

__all__ = ["HelpFormatter", "NumbersOrAuto", "add_data_arguments", "add_debug_option", "add_subparser", "program_parser", "wrap"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows defaults that say something (not None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not quiet and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class NumbersOrAuto(argparse.Action):
    """``nargs="+"`` option of positive numbers, or the single word ``auto`` (stored as the
    string ``"auto"``): what ``--anchor-sizes`` and ``--aspect-ratios`` take."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values == ["auto"]:
            setattr(namespace, self.dest, "auto")
            return
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            parser.error(f"{option_string} takes positive numbers or the word auto, got {' '.join(values)}")
        setattr(namespace, self.dest, numbers)


def wrap(text, width=88):
    """Fill each paragraph of ``text`` (the formatter keeps descriptions as written)."""
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def add_subparser(subparsers, name, help, description, examples, parents):
    """Subcommand ``name`` of ``subparsers``: ``help`` in the command list, ``description``
    filled, ``examples`` (lines as written) after the options."""
    return subparsers.add_parser(
        name, help=help, description=wrap(description), epilog="examples:\n" + examples,
        formatter_class=HelpFormatter, parents=parents,
    )


def add_data_arguments(parser, split_help):
    """The "data" options of a command that reads a dataset (VOC or COCO); returns the group."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="VOC: dataset folder (devkit VOC2007 or images/ + annotations/ "
                       "+ <split>.txt). COCO: folder the --annotations/--images paths are relative "
                       "to, or the instances JSON itself")
    group.add_argument("--format", choices=FORMATS, default="voc", help="annotation format")
    group.add_argument("--split", help=split_help)
    group.add_argument("--annotations", help="COCO: instances JSON")
    group.add_argument("--images", help="COCO: image folder (default: the JSON's folder)")
    return group


def add_debug_option(parser, default=argparse.SUPPRESS):
    """``--debug`` on ``parser``. A subcommand's is absent unless given (``default`` SUPPRESS),
    so that it does not hide the program's own ``--debug`` given before the subcommand."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show full tracebacks instead of one-line errors")
    return parser


def program_parser():
    """``(parser, subparsers, common)``: the ``rcnn-zoo`` parser, its subcommand group (one
    command required) and the parent parser of every subcommand (``--debug``)."""
    common = add_debug_option(argparse.ArgumentParser(add_help=False))
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=wrap("Two-stage object detectors (Faster R-CNN, R-FCN, Fast R-CNN, R-CNN) for Keras 3: "
                         "train on VOC or COCO format data, evaluate mAP, draw detections, export for TF "
                         "Serving."),
        epilog="examples:\n"
        "  rcnn-zoo demo\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --val-split test --epochs 80 --output-dir runs/raccoon\n"
        "  rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test\n"
        "  rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections\n"
        "  rcnn-zoo <command> --help    (every command explains its options)",
        formatter_class=HelpFormatter,
    )
    add_debug_option(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True
    return parser, subparsers, common
