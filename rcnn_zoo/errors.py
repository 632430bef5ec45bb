"""Errors in what a caller asked for, as opposed to bugs."""

import math


class UsageError(Exception):
    """A problem with what the user asked for (a path, a format, an option value).

    Raised by the loading, training, evaluation and inference functions that ``rcnn-zoo`` and
    scripts share. The message is one line in the CLI's terms (option ``--batch-size`` is
    :class:`rcnn_zoo.training.TrainConfig` field ``batch_size``); ``rcnn-zoo`` prints it and
    exits with code 2.
    """


def check_number(name, value, minimum=None, maximum=None, above=None, integer=False):
    """Check the numeric option ``name`` (``lr`` is ``--lr``): finite, an integer if
    ``integer``, ``> above``, ``≥ minimum``, ``≤ maximum``; ``None`` passes (not given).
    Raises :class:`UsageError` naming the option, its allowed range and the value."""
    if value is None:
        return
    option = "--" + name.replace("_", "-")
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if minimum is not None:
        bounds.append(f"≥ {minimum:g}")
    if maximum is not None:
        bounds.append(f"≤ {maximum:g}")
    wanted = " ".join(["an integer" if integer else "a finite number"] + [" and ".join(bounds)] * bool(bounds))
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    bad = (
        isinstance(value, bool)
        or not math.isfinite(number)
        or (integer and number != int(number))
        or (above is not None and not number > above)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    )
    if bad:
        raise UsageError(f"{option} must be {wanted}, got {value!r}")
