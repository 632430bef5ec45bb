"""``rcnn-zoo train`` as a function: :func:`train` reads the data, builds (or reloads) the
detector, fits it with warm-up + cosine learning rate, validation mAP, checkpoints,
``history.csv`` and its plot, and continues an interrupted or finished run.

The detectors differ in what they train on: Faster R-CNN and R-FCN one ``fit`` on augmented
batches; Fast R-CNN the same ``fit`` on batches that carry each image's selective search
proposals; R-CNN its three stages (:func:`~rcnn_zoo.training.rcnn_stages.train_rcnn_stages`).
"""

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings

import keras

from rcnn_zoo.checkpoints import HistoryCSV, logged_values, read_history
from rcnn_zoo.data import evaluation_dataset
from rcnn_zoo.data.anchor_fit import AUTO, format_anchor_fit
from rcnn_zoo.errors import UsageError
from rcnn_zoo.evaluation import MeanAveragePrecisionCallback, evaluation_batches
from rcnn_zoo.inference import load_model
from rcnn_zoo.models.registry import detector_name
from rcnn_zoo.training.budget import (
    HEADROOM,
    MEASURED_STEPS,
    RECIPE_FIELDS,
    WARMUP_STEPS,
    StepTimer,
    TimeBudget,
    Workload,
    choose_data_recipe,
    fit_step_seconds,
    format_choices,
    given_fields,
    parse_duration,
    plan_schedule,
)
from rcnn_zoo.training.callbacks import (
    AtomicCheckpoint,
    FillMissing,
    StopOnDivergence,
    TrainingCurves,
    TrainingDiverged,
)
from rcnn_zoo.training.config import check_config, check_detector_options
from rcnn_zoo.training.datasets import (
    class_summary,
    distributed_batches,
    fit_batches,
    fit_steps,
    load_training_data,
    rcnn_regions,
)
from rcnn_zoo.training.distribute import (
    ReplicaLocalEvaluation,
    check_global_batch,
    check_workers_agree,
    is_chief,
    make_strategy,
    remove_write_dir,
    strategy_scope,
    write_dir,
)
from rcnn_zoo.training.detectors import (
    DETECTOR_TITLES,
    PROPOSAL_DETECTORS,
    build_fitted_detector,
    detector_class,
    parse_model_args,
)
from rcnn_zoo.training.rcnn_stages import RCNN_FINE_TUNE_SHARE, RCNN_REGIONS_PER_BATCH_IMAGE, train_rcnn_stages
from rcnn_zoo.training.record import earlier_arguments, finish_run, start_record
from rcnn_zoo.training.run_folder import PROPOSALS_FOLDER, RunProgress, resume_point, run_paths
from rcnn_zoo.training.schedules import CosineLearningRate, build_optimizer
from rcnn_zoo.visualization import plot_training_curves

__all__ = ["train"]


def train(config, callbacks=None):
    """Train the detector ``config.detector`` (default a Faster R-CNN) as
    :class:`~rcnn_zoo.training.TrainConfig` ``config`` says; see ``rcnn-zoo train --help``.
    Fast R-CNN's selective search proposals and R-CNN's are cached in
    ``<output_dir>/proposals/``; R-CNN trains in stages (:func:`train_rcnn_stages`) and writes
    ``last.keras`` once, after its last stage.

    Writes into ``config.output_dir``: ``last.keras`` (every epoch), ``best.keras`` (best
    ``val_mAP``, with a validation set), ``history.csv``, ``training_curves.png``,
    ``config.json`` and, while running, ``backup/`` (re-running the same command after an
    interruption continues from the last finished epoch). ``callbacks``: more Keras callbacks,
    run after the built-in ones. Problems with the data paths or options raise
    :class:`rcnn_zoo.errors.UsageError`.

    ``config.distribute`` (:mod:`rcnn_zoo.training.distribute`): the model is built and
    compiled in the strategy's scope and ``config.batch_size`` is the global batch. With
    several workers only the chief writes into ``config.output_dir``; the others write into a
    temporary folder, removed at the end (their result's ``paths`` are still the run folder's).

    Returns:
        dict: ``model`` (the trained detector), ``output_dir``, ``history`` (rows of
        history.csv), ``epochs_done``, ``wall_seconds``, ``cpu_seconds``, ``paths``.
    """
    started = time.time()  # the --time-budget clock: reading the data and measuring count
    check_config(config)
    check_detector_options(config)
    strategy = make_strategy(config.distribute)  # first: multi-worker configures TF before it runs anything
    if strategy is not None:
        check_global_batch(config.batch_size, strategy)
    out = config.output_dir
    paths = run_paths(out)  # what every worker reads; only the chief also writes there
    interrupted_at, finished_before, train_set, val_set = _read_run(config, paths, strategy)
    print(class_summary(train_set))
    if interrupted_at and config.time_budget:
        config = _chosen_before(config)  # the same command continues with the values its recipe chose

    written = write_dir(out, strategy)
    try:
        os.makedirs(written, exist_ok=True)
        keras.utils.set_random_seed(config.seed)  # the same on every worker: same weights, same batches
        with strategy_scope(strategy), _dtype_policy(config.dtype_policy):
            model, initial_epoch, choices, config = _start_model(config, paths, train_set, interrupted_at,
                                                                 finished_before)
        if initial_epoch >= config.epochs:
            print(f"{out}: already trained {initial_epoch} epoch(s) ≥ --epochs {config.epochs}; nothing to do.")
            return _result(model, out, read_history(paths["history"]), initial_epoch, 0.0, 0.0, paths)
        continuing = initial_epoch > 0
        if continuing:
            how = "interrupted run (backup/progress.json, last.keras)" if interrupted_at else "last.keras"
            print(f"Resuming from the {how} at epoch {initial_epoch + 1} of {config.epochs}.")

        own = run_paths(written)
        budget = None
        if config.time_budget and not continuing:
            config, budget = _plan_budget(model, config, train_set, val_set, own, started, choices)
        run = _prepare_run(model, config, paths, own, train_set, val_set, initial_epoch, callbacks, strategy, budget)
        record = start_record(own["config"], config, model, train_set, val_set, continuing, choices)
        print(_announcement(model, train_set, val_set, out) + _replicas_note(strategy, config.batch_size))
        history, wall, cpu = _run_and_record(run, config, own, record, initial_epoch, budget)
        print(_summary(history, initial_epoch, wall, cpu, paths))
        return _result(model, out, history, len(history), wall, cpu, paths)
    finally:
        remove_write_dir(written, out)


@contextlib.contextmanager
def _dtype_policy(name):
    """Build the model under Keras' dtype policy ``name``; the caller's global policy is restored
    (the model's layers keep theirs, and a saved ``.keras`` file records it)."""
    before = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(before)


def _read_run(config, paths, strategy):
    """``(interrupted_at, finished_before, train_set, val_set)``: where the run in
    ``config.output_dir`` continues (:func:`resume_point`) and its data, the same on every
    worker (checked, so that a worker that sees another run or other data is an error rather
    than a hang or a silent divergence)."""
    try:
        interrupted_at, finished_before = resume_point(config.output_dir, paths, config.resume,
                                                       clean=is_chief(strategy))
        train_set, val_set = load_training_data(config)
    except UsageError:
        check_workers_agree(strategy, {"ready": 0, "resume_epoch": -1, "finished": -1, "train_images": -1})
        raise
    resume_epoch = -1 if interrupted_at is None else interrupted_at
    check_workers_agree(strategy, {"ready": 1, "resume_epoch": resume_epoch, "finished": int(finished_before),
                                   "train_images": len(train_set)})
    return interrupted_at, finished_before, train_set, val_set


def _replicas_note(strategy, batch_size):
    """``; global batch B on N replicas (B/N image(s) each)`` when ``strategy`` has several
    replicas, else ``""``: the end of the announcement."""
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if replicas == 1:
        return ""
    return f"; global batch {batch_size} on {replicas} replicas ({batch_size // replicas} image(s) each)"


def _start_model(config, paths, train_set, interrupted_at, finished_before):
    """``(model, initial_epoch, choices, config)``: the run's ``last.keras`` with its optimizer
    state when there is one to continue, else a new compiled detector from ``config``;
    ``choices``: what was chosen for the data (``--time-budget``'s image size and augmentation,
    ``"auto"`` anchors; printed now), for config.json; ``config`` with those choices."""
    if finished_before or interrupted_at:
        model = load_model(paths["last"], compile=True)
        wanted, trained = detector_name(detector_class(config.detector)), detector_name(model)
        if trained != wanted:
            raise UsageError(f"{paths['last']} was trained with --detector {trained}, not {wanted}; leave "
                             f"--detector out (or pass --detector {trained}) to continue it")
        if list(model.class_names or []) != train_set.class_names:
            raise UsageError(f"{paths['last']}: the model's classes {model.class_names} differ from "
                             f"the data's {train_set.class_names}")
        return model, interrupted_at or len(read_history(paths["history"])), [], config
    choices = []
    if config.time_budget:
        config, choices = choose_data_recipe(config, train_set, _build(config, train_set, fitted=False)[0])
        if choices:
            print(format_choices(choices, "Recipe for this data (--time-budget; the options given stay):"))
    model, fit = _build(config, train_set)
    if fit is not None:
        print(format_anchor_fit(fit))
        choices.append({"choice": "anchors", "anchor_sizes": fit["sizes"], "aspect_ratios": fit["aspect_ratios"],
                        "reason": "--anchor-sizes/--aspect-ratios auto: highest anchor recall on the training "
                                  "boxes at the same anchor count per location",
                        "recall_before": fit["before"], "recall_after": fit["after"]})
    if detector_name(model) != "rcnn":  # R-CNN's stages compile their own models
        model.compile(optimizer=build_optimizer(config))
    return model, interrupted_at or 0, choices, config


def _build(config, train_set, fitted=True):
    """``(model, fit)`` of :func:`build_fitted_detector` for ``config``; ``fitted=False``: with the
    default anchors instead of fitted ones (the model the recipe reads its defaults from)."""
    auto = (config.anchor_sizes, config.aspect_ratios) if fitted else (
        None if config.anchor_sizes == AUTO else config.anchor_sizes,
        None if config.aspect_ratios == AUTO else config.aspect_ratios)
    return build_fitted_detector(train_set, config.backbone, config.image_min_size, config.image_max_size, *auto,
                                 parse_model_args(config.model_args), detector=config.detector)


def _plan_budget(model, config, train_set, val_set, own, started, choices):
    """``(config, budget)``: ``config`` with the schedule :func:`plan_schedule` chose for
    ``--time-budget`` from step times measured on ``model`` (printed, and added to ``choices``),
    and the :class:`TimeBudget` that ends its epochs in time (None when ``--epochs`` was given)."""
    seconds = parse_duration(config.time_budget)
    if detector_name(model) == "rcnn":
        workload = _rcnn_workload(model, config, train_set, own)
    else:
        workload = _fit_workload(model, config, train_set, val_set, own)
    config, schedule, deadline = plan_schedule(config, workload, started, seconds)
    if schedule:
        print(format_choices(schedule, f"Schedule for the {config.time_budget} budget, from step times measured now:"))
    choices += schedule
    if not any(c["choice"] == "epochs" for c in schedule):
        return config, None
    return config, TimeBudget(started, deadline, config.epochs, limit=math.ceil(HEADROOM * config.epochs),
                              verbose=config.verbose)


def _proposal_cache(own):
    """The folder of the selective search proposals (cached once per image), beside last.keras."""
    return os.path.join(os.path.dirname(own["last"]), PROPOSALS_FOLDER)


def _fit_workload(model, config, train_set, val_set, own):
    """The :class:`Workload` of a detector trained by one ``fit``: steps timed on its own batches."""
    def batches(batch):
        return fit_batches(model, train_set, dataclasses.replace(config, batch_size=batch), _proposal_cache(own))[0]

    return Workload(measure=lambda batch: fit_step_seconds(model, batches(batch), 0.1 * config.lr),
                    steps=lambda batch: fit_steps(model, train_set, batch), images=len(train_set),
                    val_images=len(val_set) if val_set is not None else 0)


def _rcnn_workload(model, config, train_set, own):
    """R-CNN's :class:`Workload`: its fine-tuning steps (batches of 32 × batch warped regions),
    timed; they get :data:`RCNN_FINE_TUNE_SHARE` of the time left, the SVM and regressor stages the
    rest. The batch size stays (it sets the regions per step, not the throughput)."""
    regions = rcnn_regions(model, train_set, _proposal_cache(own), config.verbose)

    def measure(batch):
        size = RCNN_REGIONS_PER_BATCH_IMAGE * batch
        data = model.fine_tune_dataset(regions, num_batches=WARMUP_STEPS + MEASURED_STEPS, batch_size=size,
                                       seed=config.seed)
        timer = StepTimer()
        optimizer = build_optimizer(dataclasses.replace(config, lr=0.1 * config.lr))
        model.fine_tune(data, epochs=1, optimizer=optimizer, bn_statistics_batches=0, callbacks=[timer], verbose=0)
        return timer.median_seconds()

    def steps(batch):
        return max(1, math.ceil(len(regions) / (RCNN_REGIONS_PER_BATCH_IMAGE * batch)))

    return Workload(measure, steps, len(train_set), share=RCNN_FINE_TUNE_SHARE, choose_batch=False)


def _chosen_before(config):
    """``config`` with the values the first run's recipe chose (its config.json) for the fields
    the user did not give: an interrupted ``--time-budget`` run continues as it was planned."""
    given, earlier = given_fields(config), earlier_arguments(config.output_dir)
    chosen = {k: v for k, v in earlier.items() if k in RECIPE_FIELDS and k not in given}
    return dataclasses.replace(config, **chosen)


def _prepare_run(model, config, paths, own, train_set, val_set, initial_epoch, callbacks, strategy=None,
                 budget=None):
    """Everything the training needs, computed now (selective search with its progress bar
    included); returns the zero-argument function that trains. ``paths``: the run folder's
    files (read), ``own``: where this process writes them (the same unless a non-chief
    worker); ``budget``: the :class:`TimeBudget` of a ``--time-budget`` run whose epochs were
    chosen (it ends them in time)."""
    cache = _proposal_cache(own)
    if detector_name(model) == "rcnn":
        regions = rcnn_regions(model, train_set, cache, config.verbose)
        val_batches = _proposal_validation_batches(model, val_set, cache, config.verbose)
        num_val = len(val_set) if val_set is not None else 0
        return lambda: train_rcnn_stages(model, regions, config, paths, initial_epoch, callbacks, val_batches,
                                         num_val, budget)
    replicated = strategy is not None and strategy.num_replicas_in_sync > 1
    batches, steps = fit_batches(model, train_set, config, cache)
    if replicated:
        batches, steps = distributed_batches(model, train_set, batches, config.batch_size)
    val_batches = _proposal_validation_batches(model, val_set, cache, config.verbose)
    callbacks = _training_callbacks(config, paths, own, steps, val_set, train_set.class_names,
                                    initial_epoch, budget) + list(callbacks or [])
    for callback in callbacks:
        if val_batches is not None and isinstance(callback, MeanAveragePrecisionCallback):
            callback.validation_data = val_batches
    if replicated:
        chief = is_chief(strategy)
        callbacks = [ReplicaLocalEvaluation(c, chief) if isinstance(c, MeanAveragePrecisionCallback) else c
                     for c in callbacks]
    epochs = budget.limit if budget is not None else config.epochs  # the budget stops the run at its end
    return lambda: model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                             verbose=config.verbose)


def _proposal_validation_batches(model, val_set, cache_dir, verbose):
    """Fast R-CNN's and R-CNN's validation images with their selective search proposals
    (cached in ``cache_dir``), or None: the other detectors validate on
    :func:`rcnn_zoo.data.evaluation_dataset` as it is."""
    if val_set is None or detector_name(model) not in PROPOSAL_DETECTORS:
        return None
    return evaluation_batches(model, val_set, cache_dir, verbose=verbose)


def _training_callbacks(config, paths, own, steps_per_epoch, val_set, class_names, initial_epoch, budget=None):
    """The built-in callbacks of :func:`train`, in the order they must run: the learning rate
    first, validation mAP before the checkpoint that reads it, the backup last, and a
    :class:`TimeBudget` ``budget`` after them (it moves the ends of the first and the last).
    They continue the history of the run folder ``paths`` and write into ``own``."""
    earlier = [r for r in read_history(paths["history"]) if r["epoch"] < initial_epoch]
    schedule = CosineLearningRate(config.lr, config.epochs, steps_per_epoch, config.warmup_epochs)
    callbacks = [StopOnDivergence(_divergence_advice(config)), schedule]
    if val_set is not None:
        callbacks += [
            MeanAveragePrecisionCallback(evaluation_dataset(val_set), every_n_epochs=config.val_every,
                                         metric=config.metric, class_names=class_names),
            FillMissing(["val_mAP"]),
            AtomicCheckpoint(own["best"], monitor="val_mAP", mode="max",
                             best=max(logged_values(earlier, "val_mAP"), default=None)),
        ]
    # Written in this order, so that progress.json never counts an epoch whose model and
    # history row are not on disk.
    progress = RunProgress(own["backup"], config.epochs, initial_epoch)
    callbacks += [
        HistoryCSV(own["history"], earlier),
        AtomicCheckpoint(own["last"]),
        TrainingCurves(own["history"], own["curves"]),
        progress,
    ]
    if budget is not None:
        budget.schedule, budget.progress = schedule, progress
        callbacks.append(budget)
    return callbacks


def _divergence_advice(config):
    return (
        f"nothing of this epoch was saved. Try a lower --lr (now {config.lr:g}) and run the "
        f"command again: it continues from the last good epoch in {config.output_dir} "
        "(if one finished); if it diverges again, check the training data "
        "(boxes, classes) named in the warnings above"
    )


def _announcement(model, train_set, val_set, out):
    """The line that starts the training: model, data, image or region sizes, output folder."""
    name = detector_name(model)
    if name == "rcnn":
        sizes = (f"regions warped to {model.warp_size}×{model.warp_size} px with {model.context_padding:g} px "
                 "of context")
    else:
        sizes = (f"images resized to shorter side {getattr(model, 'image_min_size', None)}, longer ≤ "
                 f"{getattr(model, 'image_max_size', None)}")
    return (f"Training {model.backbone_name} {DETECTOR_TITLES[name]} on {len(train_set)} images "
            f"({', '.join(train_set.class_names[:10])}{' …' if train_set.num_classes > 10 else ''}), "
            f"validating on {len(val_set) if val_set else 0}; {sizes}. Output: {out}")


def _run_and_record(run, config, paths, record, initial_epoch, budget=None):
    """``run()`` timed; whatever happens, config.json gets the run's epochs and times (and what
    the :class:`TimeBudget` ``budget`` did) and the plot is redrawn. Returns ``(history rows,
    wall seconds, CPU seconds)``."""
    wall, cpu = time.time(), time.process_time()
    try:
        with warnings.catch_warnings():
            # The batches come from a tf.data pipeline that shuffles itself; Keras' note that
            # fit's shuffle=True does not apply to it would be noise. (Its "ran out of data"
            # warning is not hidden: the pipeline's length is known, so it must not appear.)
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            run()
    except TrainingDiverged:
        if config.verbose == 1:
            print(file=sys.stderr)  # end the progress-bar line before the error message
        raise
    finally:
        wall, cpu = time.time() - wall, time.process_time() - cpu
        history = read_history(paths["history"])
        _record_budget(record, budget)
        finish_run(paths["config"], record, initial_epoch, len(history), wall, cpu)
        if history:
            plot_training_curves(paths["history"], paths["curves"])
    return history, wall, cpu


def _record_budget(record, budget):
    """With a :class:`TimeBudget` ``budget``, config.json gets ``time_budget`` (its seconds, the
    seconds used since the run began, the re-plans); when it moved the run's end, the epochs the
    run ended with (a later ``--resume`` counts from them) and a choice saying why."""
    if budget is None:
        return
    record["time_budget"] = {"seconds": parse_duration(record["arguments"]["time_budget"]),
                             "epochs_end_by_seconds": round(budget.budget, 1),
                             "used_seconds": round(time.time() - budget.started, 1), "replans": budget.replans}
    if not budget.replans:
        return
    record["arguments"]["epochs"] = budget.epochs
    last = budget.replans[-1]
    record["choices"].append({"choice": "epochs re-planned", "value": budget.epochs,
                              "reason": f"after epoch {last['after_epoch']} an epoch took {last['epoch_seconds']} s "
                                        "measured (validation and checkpoints included): the run ends inside "
                                        "--time-budget"})


def _summary(history, initial_epoch, wall, cpu, paths):
    """The line that ends the training: epochs, minutes, best validation mAP, the last model."""
    summary = f"Trained {len(history) - initial_epoch} epoch(s) in {wall / 60:.1f} min ({cpu / 60:.1f} CPU min)."
    maps = logged_values(history, "val_mAP")
    if maps:
        summary += f" Best val_mAP {max(maps):.4f} (saved {paths['best']})."
    return summary + f" Last model: {paths['last']}"


def _result(model, output_dir, history, epochs_done, wall, cpu, paths):
    """What :func:`train` returns."""
    return {"model": model, "output_dir": output_dir, "history": history, "epochs_done": epochs_done,
            "wall_seconds": wall, "cpu_seconds": cpu, "paths": paths}
