"""Import TensorFlow without its C++ start-up noise.

TensorFlow 2.21 logs oneDNN, CUDA-driver and CPU-feature messages while it loads, *before* its
logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them. :func:`import_tensorflow`
sends file descriptor 2 to a temporary file while TensorFlow loads and looks for devices, then
writes back every line that is not one of those known start-up messages (anything unexpected, an
import error included, still reaches stderr). ``RCNN_ZOO_TF_LOGS=1`` shows everything.
"""

import os
import re
import sys
import tempfile

# The messages of a CPU-only TensorFlow start-up; nothing else is held back.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor"
    r"|cuda_dnn|cuda_fft|cuda_blas|gpu_device)\.cc:\d+\] .*"
    r"|To enable the following instructions: .*in other operations, rebuild TensorFlow .*)$"
)


def _replay(text):
    kept = [line for line in text.splitlines(keepends=True) if not _NOISE.match(line.rstrip("\n"))]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def import_tensorflow():
    """``import tensorflow`` (and its device scan) with the start-up messages held back."""
    if "tensorflow" in sys.modules or os.environ.get("RCNN_ZOO_TF_LOGS") == "1":
        import tensorflow  # noqa: PLC0415, F401
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to hide
        import tensorflow  # noqa: PLC0415, F401
        return
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf  # noqa: PLC0415

            tf.config.list_physical_devices()  # the CUDA-driver probe logs here
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            _replay(held.read().decode("utf-8", "replace"))
