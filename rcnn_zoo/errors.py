"""Errors in what a caller asked for, as opposed to bugs."""


class UsageError(Exception):
    """A problem with what the user asked for (a path, a format, an option value).

    Raised by the loading, training, evaluation and inference helpers that ``rcnn-zoo`` and
    scripts share. The message is one line and names the ``rcnn-zoo`` option (``--epochs``),
    whose :class:`rcnn_zoo.training.TrainConfig` field has the same name with underscores; the
    CLI prints it and exits with code 2.
    """
