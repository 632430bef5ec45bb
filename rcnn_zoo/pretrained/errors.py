"""What can go wrong with pretrained weights: a download, a hash, a file, or a model they do not
fit. Each message names the file, URL or argument concerned and what to do about it."""

from rcnn_zoo.errors import UsageError


class WeightsDownloadError(RuntimeError):
    """A registered weights file could not be downloaded (the message names the URL)."""


class WeightsIntegrityError(ValueError):
    """A weights file's SHA-256 differs from the registry's (expected, got and path named)."""


class WeightsMismatchError(ValueError):
    """Weights that do not fit the model (backbone, layer sizes, or classes with strict=True)."""


class WeightsFileError(UsageError, OSError, ValueError):
    """A ``.weights.h5`` / ``.keras`` file that cannot be read: empty, truncated or otherwise
    damaged (not a valid HDF5 file / zip archive), or not readable. The message names the file;
    ``path`` holds it.

    An :class:`OSError` (what h5py and zipfile raise for such files) and a :class:`ValueError`
    (like the other weights errors), and a :class:`rcnn_zoo.errors.UsageError`, so that
    ``rcnn-zoo`` prints it as one line.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path
