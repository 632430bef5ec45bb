"""``rcnn-zoo ARGS`` in this process, as one worker of the CLI test of ``test_multi_worker.py``.

With ``RCNN_ZOO_TEST_INTERRUPT_EPOCH=N`` set, the run is interrupted (KeyboardInterrupt, as a
Ctrl-C on that machine) when epoch ``N`` (0-based) begins, on every worker at the same point,
after writing ``RCNN_ZOO_TEST_REPORT``: JSON ``{"tmpdir": [names in TMPDIR], "own": {folder:
[files]}}``, what this worker had written in its temporary folders by then (``TMPDIR`` is the
test's own folder for this worker).
"""

import json
import os
import sys

import keras

from rcnn_zoo.cli import main
from rcnn_zoo.training import recipe


class _Interrupt(keras.callbacks.Callback):
    """Report this worker's temporary folders, then raise KeyboardInterrupt at epoch ``epoch``."""

    def __init__(self, epoch, report):
        super().__init__()
        self.epoch, self.report = epoch, report

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            return
        tmp = os.environ["TMPDIR"]
        own = {name: sorted(os.listdir(os.path.join(tmp, name))) for name in sorted(os.listdir(tmp))
               if name.startswith("rcnn_zoo-") and os.path.isdir(os.path.join(tmp, name))}
        with open(self.report, "w", encoding="utf-8") as handle:
            json.dump({"tmpdir": sorted(os.listdir(tmp)), "own": own}, handle)
        raise KeyboardInterrupt


def _with_interrupt(built_in, epoch, report):
    """``recipe._training_callbacks`` with :class:`_Interrupt` added last."""

    def callbacks(*args, **kwargs):
        return built_in(*args, **kwargs) + [_Interrupt(epoch, report)]

    return callbacks


if __name__ == "__main__":
    if os.environ.get("RCNN_ZOO_TEST_INTERRUPT_EPOCH"):
        recipe._training_callbacks = _with_interrupt(recipe._training_callbacks,
                                                     int(os.environ["RCNN_ZOO_TEST_INTERRUPT_EPOCH"]),
                                                     os.environ["RCNN_ZOO_TEST_REPORT"])
    sys.exit(main(sys.argv[1:]))
