"""Errors in what a caller asked for, as opposed to bugs."""


class UsageError(Exception):
    """A problem with what the user asked for (a path, a format, an option value).

    Raised by the loading, training, evaluation and inference functions that ``rcnn-zoo`` and
    scripts share. The message is one line in the CLI's terms (option ``--batch-size`` is
    :class:`rcnn_zoo.training.TrainConfig` field ``batch_size``); ``rcnn-zoo`` prints it and
    exits with code 2.
    """
