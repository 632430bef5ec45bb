"""The recipe ``rcnn-zoo train --time-budget 20m`` chooses for the data: what it sets, from what
it measured, and why — for every option the user did not give.

Before the model is built (:func:`choose_data_recipe`):

- **image size** from the object sizes: the shorter side grows from the default until the
  smallest 10 % of the objects reach the smallest anchor after the resize, up to the photos' own
  resolution (small objects keep their pixels; nothing is upsampled past the originals), and
  never below the default;
- **augmentation** (the raccoon recipe of the README): colour jitter and random crops for the
  detectors that train on augmented images, zoom-out only when the small objects stay at least
  the smallest anchor once shrunk by it;
- **backbone** (Faster R-CNN on the CLI's ``tiny``): ``tiny_fpn`` when the median object is
  under 112 px after the resize, so that most RoIs are pooled from its stride-4 level.

After it is built and compiled (:func:`plan_schedule`, on a :class:`Workload`: the run's own
batches, timed):

- **batch size**: the images per second of each candidate (2, 4, 8 — those whose measuring costs
  under 2 % of the budget) timed over a few steps after warm-up steps; the fastest wins, 4 when
  within 5 % of it (the batch the recipe was tested at). The measuring steps train the model too,
  at the warm-up's first learning rate. R-CNN keeps its batch (regions per step);
- **epochs**: what fits in the time left, from the measured seconds per step (R-CNN: half of it
  for its fine-tuning, the rest for its SVM and box-regressor stages);
- **warm-up**: 2 % of the steps (at least 50 steps, at most a tenth of the run); the cosine decay
  ends at the last planned epoch;
- **validation every** so many epochs that it runs about ten times.

While training, :class:`TimeBudget` times each epoch (validation and checkpoints included) and
moves the last epoch when the epochs are slower (or faster) than the steps said, the
learning-rate curve and the run's progress file with it, so that the run ends inside the budget
with its learning rate decayed.

A choice is a dict ``{"choice", "value", "reason"}`` (more keys where measured); the list is
printed before training and stored in ``config.json`` under ``choices``.
"""

import dataclasses
import math
import re
import time

import keras
import numpy as np

from rcnn_zoo.data.stages import resized_size
from rcnn_zoo.errors import UsageError
from rcnn_zoo.models.registry import detector_name
from rcnn_zoo.training.detectors import parse_model_args
from rcnn_zoo.utils import flat_numbers

__all__ = [
    "BATCH_CANDIDATES",
    "HEADROOM",
    "RECIPE_FIELDS",
    "StepTimer",
    "TimeBudget",
    "Workload",
    "choose_data_recipe",
    "fit_step_seconds",
    "format_choices",
    "given_fields",
    "parse_duration",
    "plan_schedule",
]

SMALL_OBJECT_PERCENTILE = 10  # the image size is chosen for the smallest tenth of the objects
LARGEST_CHOSEN_MIN_SIZE = 800  # px: the recipe never makes the shorter side larger than this
BATCH_CANDIDATES = (2, 4, 8)
PREFERRED_BATCH = 4  # the batch the recipe was tested at; kept when within 5 % of the fastest
WARMUP_STEPS, MEASURED_STEPS = 2, 6  # per candidate batch size: untimed, then timed
MEASURING_SHARE = 0.02  # of the budget, at most, per candidate batch size
RESERVE_SHARE = 0.03  # of the budget, kept for the last checkpoint and plot
VALIDATIONS = 10  # about this many validations in a run
HEADROOM = 1.5  # a run may grow to this many times its planned epochs (TimeBudget)
# The TrainConfig fields the recipe may set.
RECIPE_FIELDS = ("backbone", "image_min_size", "image_max_size", "jitter", "random_crop", "zoom_out", "batch_size",
                 "epochs", "warmup_epochs", "val_every")
# The CLI's from-scratch backbone, and the one the recipe takes instead for small objects.
SCRATCH_BACKBONE, SMALL_OBJECT_BACKBONE = "tiny", "tiny_fpn"
# px after the resize: FPN's eq. 1 (k0 = 4 at 224 px) pools RoIs under this from P2, stride 4.
FINE_LEVEL_SIZE = 112
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text):
    """Seconds in ``text``: ``"90s"``, ``"20m"``, ``"1.5h"``, ``"1h30m"`` (a number alone is
    refused: 20 could be seconds or minutes). Raises :class:`UsageError`."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"\s*((?:\d+(?:\.\d*)?\s*[smh]\s*)+)", str(text))
        if not parts:
            raise UsageError(f"--time-budget takes a duration with its unit, e.g. 20m, 90s, 1h30m; got {text!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d*)?)\s*([smh])", text))
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--time-budget must be a positive duration, got {text!r}")
    return seconds


def given_fields(config):
    """The :class:`~rcnn_zoo.training.TrainConfig` fields the user gave: those listed in
    ``config.given`` (the CLI lists the options typed) and those that differ from the default."""
    defaults = type(config)()
    named = set(config.given or ())
    return named | {f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(defaults, f.name)}


def _choice(name, value, reason, **measured):
    return {"choice": name, "value": value, "reason": reason, **measured}


def object_sizes(dataset, min_size, max_size):
    """``(sizes, short, long)``: √(w·h) in pixels of every non-difficult object after the resize
    ``(min_size, max_size)``, and the originals' median shorter and longer sides."""
    sizes, shorts, longs = [], [], []
    for record in dataset.records:
        height, width = int(record.height), int(record.width)
        new_height, _ = resized_size(height, width, min_size, max_size)
        boxes = record.boxes[~record.difficult]
        sides = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0)
        sizes.append(np.sqrt(sides[:, 0] * sides[:, 1]) * (new_height / height))
        shorts.append(min(height, width))
        longs.append(max(height, width))
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    return sizes, float(np.median(shorts)), float(np.median(longs))


def choose_image_sizes(dataset, default_min, default_max, smallest_anchor):
    """The recipe's ``(image_min_size, image_max_size, choice)``: the defaults, raised (in steps of
    32 px, never past the originals' median shorter side nor :data:`LARGEST_CHOSEN_MIN_SIZE`) until
    the smallest tenth of the objects is at least ``smallest_anchor`` pixels after the resize."""
    sizes, short, long_side = object_sizes(dataset, default_min, default_max)
    small = float(np.percentile(sizes, SMALL_OBJECT_PERCENTILE)) if sizes.size else float("inf")
    if small >= smallest_anchor:
        reason = (f"the smallest {SMALL_OBJECT_PERCENTILE}% of the objects are ≥ {small:.0f} px at the default "
                  f"size, not below the smallest anchor ({smallest_anchor:g} px)")
        return default_min, default_max, _choice("image size", [default_min, default_max], reason)
    ceiling = min(LARGEST_CHOSEN_MIN_SIZE, max(default_min, int(short)))
    wanted = 32 * math.ceil(default_min * smallest_anchor / max(small, 0.5) / 32)  # a sub-pixel box wants the most
    min_size = max(default_min, min(wanted, ceiling))
    max_size = round(min_size * default_max / default_min)
    if min_size >= short:  # at the originals' resolution: keep their longer side too
        max_size = max(max_size, int(long_side))
    after = float(np.percentile(object_sizes(dataset, min_size, max_size)[0], SMALL_OBJECT_PERCENTILE))
    reason = (f"the smallest {SMALL_OBJECT_PERCENTILE}% of the objects are < {small:.0f} px at the default "
              f"{default_min}/{default_max}, under the smallest anchor ({smallest_anchor:g} px); at "
              f"{min_size}/{max_size} they are ≥ {after:.0f} px")
    if min_size < wanted:
        reason += f" (capped at the photos' median shorter side {short:.0f} px: nothing is upsampled past it)" \
            if min_size >= short else f" (capped at {LARGEST_CHOSEN_MIN_SIZE} px)"
    return min_size, max_size, _choice("image size", [min_size, max_size], reason, small_objects_px=round(small, 1))


def choose_augmentation(dataset, detector, min_size, max_size, smallest_anchor, given):
    """The recipe's augmentation fields (a dict) and their choices, for those not ``given``:
    jitter and random crops (detectors that train on augmented images), zoom-out 1.5 when the
    smallest tenth of the objects stays ≥ ``smallest_anchor`` px once shrunk by it."""
    fields, choices = {}, []
    if detector == "rcnn":
        return fields, choices
    if "jitter" not in given:
        fields["jitter"] = True
        choices.append(_choice("jitter", True, "colour jitter: a from-scratch run sees each photo many times"))
    if detector == "fast_rcnn":  # its proposals are computed once per original image
        return fields, choices
    if "random_crop" not in given:
        fields["random_crop"] = 0.5
        choices.append(_choice("random crop", 0.5, "half the images cropped to ≥ 50% of each side: more object "
                                                   "positions and scales"))
    if "zoom_out" not in given:
        sizes = object_sizes(dataset, min_size, max_size)[0]
        small = float(np.percentile(sizes, SMALL_OBJECT_PERCENTILE)) if sizes.size else 0.0
        zoom = 1.5 if small / 1.5 >= smallest_anchor else 1.0
        fields["zoom_out"] = zoom
        why = "≥" if zoom > 1 else "<"
        choices.append(_choice("zoom out", zoom, f"the smallest {SMALL_OBJECT_PERCENTILE}% of the objects "
                                                 f"({small:.0f} px) shrunk 1.5× are {why} the smallest anchor "
                                                 f"({smallest_anchor:g} px)" + ("" if zoom > 1 else ": no zoom-out")))
    return fields, choices


def choose_backbone(dataset, detector, backbone, min_size, max_size, given):
    """The recipe's backbone fields (a dict) and choices: a Faster R-CNN on
    :data:`SCRATCH_BACKBONE` not given gets :data:`SMALL_OBJECT_BACKBONE` when the median object
    is under :data:`FINE_LEVEL_SIZE` px after the resize ``(min_size, max_size)``."""
    if detector != "faster_rcnn" or backbone != SCRATCH_BACKBONE or "backbone" in given:
        return {}, []
    sizes = object_sizes(dataset, min_size, max_size)[0]
    median = float(np.median(sizes)) if sizes.size else float("inf")
    if median >= FINE_LEVEL_SIZE:
        return {}, [_choice("backbone", backbone, f"the median object is {median:.0f} px after the resize, "
                                                  f"≥ {FINE_LEVEL_SIZE} px: the stride-8 map pools its RoIs")]
    reason = (f"the median object is {median:.0f} px after the resize, < {FINE_LEVEL_SIZE} px: {SMALL_OBJECT_BACKBONE} "
              "pools such RoIs from its stride-4 level (at 1.5-1.8x the step time of tiny)")
    return {"backbone": SMALL_OBJECT_BACKBONE}, [_choice("backbone", SMALL_OBJECT_BACKBONE, reason,
                                                         median_object_px=round(median, 1))]


def smallest_anchor(model):
    """The smallest anchor size in pixels of ``model``'s RPN, or None (no anchors)."""
    rpn = getattr(model, "rpn", None)
    if rpn is None:
        return None
    return min(flat_numbers(rpn.anchor_generator.sizes))


def choose_data_recipe(config, dataset, model):
    """``(config, choices)``: ``config`` with the image sizes and augmentation chosen for
    ``dataset`` (fields not given), from ``model`` built with the defaults (its resize rule and
    smallest anchor; detectors without anchors use 32 px, the smallest default anchor)."""
    given = given_fields(config)
    detector = detector_name(model)
    anchor = smallest_anchor(model) or 32.0
    changes, choices = {}, []
    min_size, max_size = getattr(model, "image_min_size", None), getattr(model, "image_max_size", None)
    if detector != "rcnn" and min_size and max_size and not {"image_min_size", "image_max_size"} & given:
        min_size, max_size, choice = choose_image_sizes(dataset, min_size, max_size, anchor)
        changes.update(image_min_size=min_size, image_max_size=max_size)
        choices.append(choice)
    fields, augmentation = choose_augmentation(dataset, detector, min_size, max_size, anchor, given)
    changes.update(fields)
    if "weights" in parse_model_args(config.model_args):  # weights= fix the backbone they were trained with
        given = given | {"backbone"}
    fields, backbone = choose_backbone(dataset, detector, config.backbone, min_size, max_size, given)
    changes.update(fields)
    return dataclasses.replace(config, **changes), choices + augmentation + backbone


class StepTimer(keras.callbacks.Callback):
    """Wall seconds of every training batch (``seconds``)."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start = [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def median_seconds(self):
        """Median seconds of a step after the :data:`WARMUP_STEPS` first (the first traces it)."""
        return float(np.median(self.seconds[WARMUP_STEPS:]))


def fit_step_seconds(model, batches, lr):
    """Median wall seconds of ``model``'s (compiled) training steps on ``batches``, over
    :data:`MEASURED_STEPS` steps after :data:`WARMUP_STEPS` untimed ones. The steps train the
    model, at learning rate ``lr``."""
    timer = StepTimer()
    model.optimizer.learning_rate = lr
    # Repeated: a small dataset may hold fewer batches an epoch than are measured.
    model.fit(batches.repeat(), epochs=1, steps_per_epoch=WARMUP_STEPS + MEASURED_STEPS, verbose=0,
              callbacks=[timer])
    return timer.median_seconds()


def _pick_batch(per_image):
    """The fastest batch size of ``{batch: seconds per image}``, :data:`PREFERRED_BATCH` when it is
    within 5 % of it."""
    fastest = min(per_image, key=per_image.get)
    if PREFERRED_BATCH in per_image and per_image[PREFERRED_BATCH] <= 1.05 * per_image[fastest]:
        return PREFERRED_BATCH
    return fastest


def measure_batches(measure, candidates, budget):
    """``{batch size: seconds per image}`` from ``measure(batch)`` (seconds per step) for each of
    ``candidates`` in turn, stopping before one whose measuring would take more than
    :data:`MEASURING_SHARE` of ``budget`` seconds (the first is always measured)."""
    per_image = {}
    for batch in candidates:
        if per_image and (WARMUP_STEPS + MEASURED_STEPS) * batch * min(per_image.values()) > MEASURING_SHARE * budget:
            break
        per_image[batch] = measure(batch) / batch
    return per_image


@dataclasses.dataclass
class Workload:
    """What one epoch of a run is, for :func:`plan_schedule`: ``measure(batch)`` → seconds per
    training step (measured), ``steps(batch)`` → steps per epoch, ``images``: training images (no
    candidate batch is larger), ``val_images``: validation images (inference
    costs about half a training step per image), ``share``: of the time left, the part these
    epochs get (R-CNN's fine-tuning leaves the rest to its SVM and regressor stages),
    ``choose_batch``: whether the batch size may be chosen."""

    measure: object
    steps: object
    images: int
    val_images: int = 0
    share: float = 1.0
    choose_batch: bool = True


def plan_schedule(config, workload, started, budget):
    """``(config, choices, deadline)``: batch size, epochs, warm-up and validation interval chosen
    so that the run's epochs (``workload``, a :class:`Workload`) end ``deadline`` seconds after
    ``started`` (``time.time()``), inside ``budget`` seconds with a reserve for the last save;
    fields the user gave stay."""
    given = given_fields(config)
    choose_batch = workload.choose_batch and "batch_size" not in given
    fitting = [b for b in BATCH_CANDIDATES if b <= workload.images] or [BATCH_CANDIDATES[0]]
    candidates = fitting if choose_batch else [config.batch_size]
    measured = measure_batches(workload.measure, candidates, budget)
    batch = _pick_batch(measured) if choose_batch else config.batch_size
    per_image, steps = measured[batch], workload.steps(batch)
    epoch_seconds = steps * batch * per_image
    elapsed = time.time() - started
    left = workload.share * (budget - elapsed - RESERVE_SHARE * budget)
    deadline = elapsed + left
    val_seconds = 0.5 * per_image * workload.val_images
    choices = []
    if choose_batch:
        rates = {str(b): round(1.0 / s, 2) for b, s in measured.items()}
        choices.append(_choice("batch size", batch, f"images per second measured at batch {', '.join(rates)}: "
                                                    f"{', '.join(map(str, rates.values()))} (the fastest; "
                                                    f"{PREFERRED_BATCH} when within 5%)", images_per_second=rates))
    changes = {"batch_size": batch}
    epochs = config.epochs
    if "epochs" not in given:
        val_every = config.val_every if "val_every" in given or not workload.val_images else 1
        epochs = max(1, int(left / (epoch_seconds + val_seconds / val_every)))
        if "val_every" not in given and workload.val_images:
            val_every = max(1, round(epochs / VALIDATIONS))
            epochs = max(1, int(left / (epoch_seconds + val_seconds / val_every)))
            changes["val_every"] = val_every
            choices.append(_choice("validate every", val_every, f"about {VALIDATIONS} validations in the run"))
        changes["epochs"] = epochs
        share = f"{workload.share:.0%} of " if workload.share < 1 else ""
        choices.append(_choice("epochs", epochs, f"{share}{left / 60:.1f} min left of the {budget / 60:g} min budget "
                                                 f"(minus {RESERVE_SHARE:.0%} for the last save); an epoch of "
                                                 f"{steps} steps takes {epoch_seconds:.1f} s measured; the "
                                                 f"end follows the epochs' own times (up to "
                                                 f"{math.ceil(HEADROOM * epochs)} epochs)",
                               epoch_seconds=round(epoch_seconds, 2)))
    if "warmup_epochs" not in given:
        warmup = min(max(0.02 * epochs * steps, 50) / steps, 0.1 * epochs)
        changes["warmup_epochs"] = round(warmup, 3)
        choices.append(_choice("warm-up epochs", round(warmup, 3), f"2% of the {epochs * steps} steps, at least 50, "
                                                                   "at most a tenth of the run; cosine decay to "
                                                                   "the last epoch"))
    return dataclasses.replace(config, **changes), choices, deadline


def format_choices(choices, head):
    """``head``, then one line per choice with its reason: the recipe as printed before training."""
    return "\n".join([head] + [f"  {c['choice']}: {c.get('value')} — {c['reason']}" for c in choices])


class TimeBudget(keras.callbacks.Callback):
    """Ends the run inside ``budget`` seconds after ``started`` (``time.time()``): after each epoch
    the epochs that fit are re-planned from the measured wall time of this run's epochs
    (validation and checkpoints included, which a few measured steps do not show), and the last
    epoch moves, and with it the end of ``schedule``'s cosine curve and ``progress``'s count (a
    :class:`~rcnn_zoo.training.run_folder.RunProgress`), so that the run finishes as complete,
    its learning rate decayed.

    ``epochs``: the planned total; ``limit``: the most it may grow to (the ``epochs`` that
    ``fit`` is given, :data:`HEADROOM` times the plan). The end moves earlier whenever fewer
    epochs fit, later only during the first half of the run (a late move would raise a learning
    rate already decayed). ``clock``: the wall clock (``time.time``)."""

    def __init__(self, started, budget, epochs, limit=None, schedule=None, progress=None, verbose=1,
                 clock=time.time):
        super().__init__()
        self.started, self.budget, self.epochs = float(started), float(budget), int(epochs)
        self.limit = max(int(limit if limit is not None else epochs), self.epochs)
        self.schedule, self.progress, self.verbose, self.clock = schedule, progress, verbose, clock
        self.replans = []
        self._said = self.epochs  # the end last printed

    def on_train_begin(self, logs=None):
        self._fit_started, self._epochs_timed = self.clock(), 0

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_timed += 1
        now = self.clock()
        per_epoch = (now - self._fit_started) / self._epochs_timed
        fits = epoch + 1 + int(max(self.started + self.budget - now, 0.0) / per_epoch)
        if fits < self.epochs:
            self._move_end(max(fits, epoch + 1), per_epoch, epoch)
        elif fits > self.epochs and self.epochs < self.limit and epoch + 1 <= self.epochs / 2:
            self._move_end(min(fits, self.limit), per_epoch, epoch)
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True

    def _move_end(self, epochs, per_epoch, epoch):
        # Said when the end has moved by 5 % since it was last said (it may move by one epoch
        # at a time as the epoch times settle); every move is in ``replans``.
        say = self.verbose and abs(epochs - self._said) >= 0.05 * self._said
        if say:
            self._said = epochs
        self.replans.append({"after_epoch": epoch + 1, "epochs": epochs, "epoch_seconds": round(per_epoch, 2)})
        self.epochs = epochs
        if self.schedule is not None:
            self.schedule.epochs = float(epochs)
        if self.progress is not None:
            self.progress.epochs = epochs
        if say:
            print(f"\n--time-budget: epochs take {per_epoch:.1f} s measured; the run now ends after epoch {epochs}.",
                  flush=True)
