"""What ``rcnn-zoo train`` takes: :class:`TrainConfig` (one field per option, the CLI's
defaults) and the checks that refuse values which cannot train, before any data is read."""

import dataclasses

from rcnn_zoo.data.anchor_fit import AUTO
from rcnn_zoo.errors import UsageError, check_number
from rcnn_zoo.evaluation import METRICS
from rcnn_zoo.models.registry import detector_name
from rcnn_zoo.training.budget import parse_duration
from rcnn_zoo.training.detectors import (
    PROPOSAL_DETECTORS,
    RCNN_IMAGE_SIZES_MESSAGE,
    detector_class,
    no_anchors_message,
)
from rcnn_zoo.training.distribute import DISTRIBUTE_MODES
from rcnn_zoo.training.schedules import OPTIMIZERS

__all__ = ["TrainConfig", "check_config", "check_detector_options"]


@dataclasses.dataclass
class TrainConfig:
    """Everything ``rcnn-zoo train`` takes (field ``image_min_size`` is option
    ``--image-min-size``); the CLI's defaults are these. Sizes are pixels, ``lr`` the peak
    learning rate, ``warmup_epochs`` epochs, ``flip``/``random_crop`` probabilities."""

    # data (None: not given)
    data: str | None = None
    format: str = "voc"
    split: str | None = None
    val_split: str | None = None
    annotations: str | None = None
    images: str | None = None
    val_annotations: str | None = None
    val_images: str | None = None
    # model
    backbone: str = "tiny"
    image_min_size: int | None = None
    image_max_size: int | None = None
    anchor_sizes: list | str | None = None  # pixels, or "auto": fitted to the training boxes
    aspect_ratios: list | str | None = None  # h/w, or "auto"
    model_args: list | None = None  # ["KEY=VALUE", …]
    # schedule
    epochs: int = 12
    batch_size: int = 4
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    # augmentation
    flip: float = 0.5
    jitter: bool = False
    random_crop: float = 0.0
    crop_min_scale: float = 0.5
    zoom_out: float = 1.0
    # validation and output
    val_every: int = 1
    metric: str = "voc"
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = False
    verbose: int = 1
    detector: str = "faster_rcnn"
    # how the run is spread over devices or machines (rcnn_zoo.training.distribute)
    distribute: str = "none"
    # Keras dtype policy of the model built for the run (mixed_bfloat16: oneDNN's bf16 kernels on
    # CPUs with AVX512_BF16 / AMX; the variables stay float32)
    dtype_policy: str = "float32"
    # the recipe (rcnn_zoo.training.budget): a duration ("20m") makes train choose, for the data
    # and within that time, every option of the recipe that was not given
    time_budget: str | None = None
    # the fields the user gave (the CLI lists the options typed); values that differ from the
    # defaults count as given too
    given: list | None = None


DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def check_config(config):
    """Refuse option values that cannot train (raise :class:`UsageError` with the allowed range):
    learning rate > 0 and finite, probabilities in [0, 1], sizes > 0, counts ≥ 1."""
    check_number("epochs", config.epochs, minimum=1, integer=True)
    check_number("batch_size", config.batch_size, minimum=1, integer=True)
    check_number("val_every", config.val_every, minimum=1, integer=True)
    check_number("lr", config.lr, above=0)
    check_number("weight_decay", config.weight_decay, minimum=0)
    check_number("warmup_epochs", config.warmup_epochs, minimum=0)
    check_number("flip", config.flip, minimum=0, maximum=1)
    check_number("random_crop", config.random_crop, minimum=0, maximum=1)
    check_number("crop_min_scale", config.crop_min_scale, above=0, maximum=1)
    check_number("zoom_out", config.zoom_out, minimum=1)
    check_number("image_min_size", config.image_min_size, minimum=1, integer=True)
    check_number("image_max_size", config.image_max_size, minimum=1, integer=True)
    if config.image_min_size and config.image_max_size and config.image_max_size < config.image_min_size:
        raise UsageError(f"--image-max-size ({config.image_max_size}) must be ≥ --image-min-size "
                         f"({config.image_min_size})")
    for name in ("anchor_sizes", "aspect_ratios"):
        values = getattr(config, name)
        if isinstance(values, str) and values != AUTO:
            raise UsageError(f"--{name.replace('_', '-')} takes numbers or 'auto', got {values!r}")
        for value in values if isinstance(values, (list, tuple)) else ():
            check_number(name, value, above=0)
    if config.metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {config.metric!r}")
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")
    if config.verbose not in (0, 1, 2):
        raise UsageError(f"--verbose must be 0, 1 or 2, got {config.verbose!r}")
    if config.distribute not in DISTRIBUTE_MODES:
        raise UsageError(f"--distribute must be one of {', '.join(DISTRIBUTE_MODES)}, got {config.distribute!r}")
    if config.time_budget is not None:
        parse_duration(config.time_budget)
        if config.distribute != "none":
            raise UsageError("--time-budget is not supported with --distribute: each worker would measure its own "
                             "step times and could choose another batch size or epoch count; give --epochs and "
                             "--batch-size instead")
    if config.dtype_policy not in DTYPE_POLICIES:
        raise UsageError(f"--dtype-policy must be one of {', '.join(DTYPE_POLICIES)}, got {config.dtype_policy!r}")


def check_detector_options(config):
    """Refuse what the chosen detector cannot train with (raise :class:`UsageError`): an unknown
    ``--detector`` (the message lists the names); ``--distribute`` with ``rcnn``; for
    ``fast_rcnn`` and ``rcnn``, whose selective search proposals are computed once per original
    image, ``--random-crop``, ``--zoom-out`` and ``--anchor-sizes``; for ``rcnn``, which trains
    on warped regions of the original images, also ``--jitter`` and the image sizes."""
    name = detector_name(detector_class(config.detector))
    if name == "rcnn" and config.distribute != "none":
        raise UsageError("--distribute is not supported with --detector rcnn: its stages (fine-tuning, SVMs, box "
                         "regressors) are not trained by one fit")
    if name not in PROPOSAL_DETECTORS:
        return
    why = "its selective search proposals are computed once per original image and would not follow"
    if config.random_crop:
        raise UsageError(f"--random-crop is not supported with --detector {name}: {why} the crop")
    if config.zoom_out and config.zoom_out > 1:
        raise UsageError(f"--zoom-out is not supported with --detector {name}: {why} the canvas")
    if config.anchor_sizes or config.aspect_ratios:
        raise UsageError(no_anchors_message(name))
    if name == "rcnn" and config.jitter:
        raise UsageError("--jitter is not supported with --detector rcnn: it fine-tunes on warped regions "
                         "of the original images, without augmentation")
    if name == "rcnn" and (config.image_min_size is not None or config.image_max_size is not None):
        raise UsageError(RCNN_IMAGE_SIZES_MESSAGE)
