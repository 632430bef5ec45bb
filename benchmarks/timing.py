"""Wall-clock timing shared by the benchmark scripts.

It imports neither TensorFlow nor PyTorch, so the torchvision side (run in its own venv) times
with the same rule: warm-up calls first (tracing, oneDNN primitive creation, caches), then the
median of the timed calls. ``function`` must finish its work before it returns (fetch the
result to NumPy), or the time measured is only the dispatch.
"""

import statistics
import time


def timings(function, repeats, warmup=1):
    """Wall seconds of each of ``repeats`` calls of ``function()``, after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def median_time(function, repeats, warmup=1):
    """Median wall seconds of ``function()`` over ``repeats`` calls after ``warmup`` calls."""
    return statistics.median(timings(function, repeats, warmup))
