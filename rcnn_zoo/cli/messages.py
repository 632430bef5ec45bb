"""How ``rcnn-zoo`` speaks on the terminal: ``rcnn-zoo: error: …`` and ``rcnn-zoo: warning: …``
lines on stderr, and the exit code of a usage error."""

import sys
import warnings

from rcnn_zoo.data import DatasetWarning

__all__ = ["EXIT_USAGE", "PROG", "error", "show_warning", "warning"]

PROG = "rcnn-zoo"
EXIT_USAGE = 2


def error(message):
    """``rcnn-zoo: error: message`` on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def warning(message):
    """``rcnn-zoo: warning: message`` on stderr, after what was printed before on stdout."""
    sys.stdout.flush()
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """A ``warnings.showwarning`` that shows warnings about the user's data as
    ``rcnn-zoo: warning: …`` lines (no source line), and the others as Python does."""
    if issubclass(category, DatasetWarning):
        warning(message)
        return
    _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning
