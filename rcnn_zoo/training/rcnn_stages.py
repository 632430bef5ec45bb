"""R-CNN's three training stages (Girshick et al. 2014, section 2.3) with ``rcnn-zoo train``'s
options mapped onto them: fine-tune the CNN on warped regions, train a linear SVM per class,
fit the box regressors. ``last.keras`` is written once, after the last stage."""

import math

from rcnn_zoo.checkpoints import HistoryCSV, logged_values, read_history, save_model_atomically
from rcnn_zoo.evaluation import evaluate_detections, predict_detections
from rcnn_zoo.training.callbacks import StopOnDivergence, TrainingCurves
from rcnn_zoo.training.schedules import CosineLearningRate, build_optimizer
from rcnn_zoo.utils import progress
from rcnn_zoo.visualization import plot_training_curves

__all__ = ["RCNN_FINE_TUNE_SHARE", "RCNN_REGIONS_PER_BATCH_IMAGE", "train_rcnn_stages"]

# R-CNN fine-tunes on batches of this many warped regions per --batch-size (4 → the paper's 128).
RCNN_REGIONS_PER_BATCH_IMAGE = 32
# With --time-budget, the part of the time left that its fine-tuning gets; the SVMs (features of
# every region, hard negative mining) and the box regressors take the rest.
RCNN_FINE_TUNE_SHARE = 0.5


def train_rcnn_stages(model, regions, config, paths, initial_epoch=0, callbacks=None, val_batches=None,
                      num_val_images=0, budget=None):
    """R-CNN's three training stages, with ``rcnn-zoo train``'s options mapped onto them.

    1. :meth:`RCNN.fine_tune`: epochs ``initial_epoch … config.epochs`` of ``ceil(K / n)``
       batches of ``n = 32 · config.batch_size`` warped regions (25 % foreground, drawn anew
       every epoch), ``K`` the candidate regions (ground truth + proposals): an epoch draws
       about as many regions as there are. Optimizer, ``lr``, weight decay and the warm-up +
       cosine curve as for the other detectors; ``history.csv`` gets a row per epoch (``loss``,
       ``accuracy``, ``lr``) and the plot is redrawn. ``callbacks`` run in this stage's ``fit``.
    2. :meth:`RCNN.train_svms` with the paper's settings (C = 1e-3, 3 rounds of hard negative
       mining).
    3. :meth:`RCNN.train_box_regressors` (ridge, λ = 1000).

    Then ``paths["last"]`` is written; with ``val_batches`` (:func:`rcnn_zoo.evaluation.
    evaluation_batches`) the validation mAP (``config.metric``) goes into the last row of
    ``history.csv``, and ``paths["best"]`` is written when it beats every earlier run's.
    ``budget``: a :class:`~rcnn_zoo.training.budget.TimeBudget` that ends stage 1 in time
    (``--time-budget``), moving the end of its learning-rate curve.
    """
    region_batch = RCNN_REGIONS_PER_BATCH_IMAGE * config.batch_size
    steps = max(1, math.ceil(len(regions) / region_batch))
    data = model.fine_tune_dataset(regions, num_batches=steps, batch_size=region_batch, seed=config.seed)
    earlier = [r for r in read_history(paths["history"]) if r["epoch"] < initial_epoch]
    advice = (f"nothing was saved (R-CNN writes last.keras after its last stage). Try a lower --lr "
              f"(now {config.lr:g}) and run the command again")
    schedule = CosineLearningRate(config.lr, config.epochs, steps, config.warmup_epochs)
    stage_callbacks = [
        StopOnDivergence(advice),
        schedule,
        HistoryCSV(paths["history"], earlier),
        TrainingCurves(paths["history"], paths["curves"]),
    ] + list(callbacks or [])
    if budget is not None:
        budget.schedule = schedule
        stage_callbacks.append(budget)
    say = print if config.verbose else (lambda *args, **kwargs: None)
    say(f"R-CNN stage 1 of 3: fine-tuning the CNN on {len(regions)} regions, epochs {initial_epoch + 1}–"
        f"{config.epochs}, {steps} batch(es) of {region_batch} warped regions each", flush=True)
    epochs = budget.limit if budget is not None else config.epochs  # the budget stops the stage at its end
    model.fine_tune(data, epochs=epochs, initial_epoch=initial_epoch, optimizer=build_optimizer(config),
                    callbacks=stage_callbacks, verbose=config.verbose)
    say("R-CNN stage 2 of 3: a linear SVM per class on fc7 features, hard negative mining", flush=True)
    model.train_svms(regions, seed=config.seed)
    say("R-CNN stage 3 of 3: box regressors on pool5 features", flush=True)
    model.train_box_regressors(regions, seed=config.seed)
    save_model_atomically(model, paths["last"])
    if val_batches is not None:
        value = _validate(model, val_batches, num_val_images, config, paths)
        say(f"val_mAP {value:.4f}")


def _validate(model, val_batches, num_val_images, config, paths):
    """The trained R-CNN's validation mAP (``config.metric``), written into the last row of
    ``history.csv``; ``paths["best"]`` is written when it beats every earlier row's."""
    found, truths, _ = predict_detections(model, progress(val_batches, num_val_images, verbose=config.verbose))
    value = float(evaluate_detections(found, truths, model.num_classes, config.metric)["mAP"])
    rows = read_history(paths["history"])
    if rows:
        last = dict(rows[-1], val_mAP=value)
        HistoryCSV(paths["history"], rows[:-1]).on_epoch_end(last.pop("epoch"), last)
        plot_training_curves(paths["history"], paths["curves"])
    if not math.isnan(value) and value > max(logged_values(rows[:-1], "val_mAP"), default=-math.inf):
        save_model_atomically(model, paths["best"])
    return value
