"""R-CNN's stage-wise training (Girshick et al. 2014, section 2.3 and appendices B, C), each
stage a ``fit`` of a small :class:`StageModel` over some of the detector's layers:

1. :meth:`RCNNTraining.fine_tune` — softmax over C+1 on warped regions; IoU ≥ 0.5 with a
   ground-truth box is that box's class, the rest background; batches of 32 foreground + 96
   background regions (:meth:`RCNNTraining.fine_tune_dataset`).
2. :meth:`RCNNTraining.train_svms` — one linear SVM per class on fc7 features (a ``Dense(C)``
   trained with the hinge loss and L2); positives are the ground-truth boxes only, negatives the
   regions with IoU < 0.3 with every box of the class; hard negative mining over a few rounds.
3. :meth:`RCNNTraining.train_box_regressors` — ridge regression of ``(dx, dy, dw, dh)`` from
   pool5 features, for regions with IoU ≥ 0.6 with a ground-truth box (a ``Dense(4C)`` with L2).

All three train on a :class:`~rcnn_zoo.targets.regions.RegionSet` from
:meth:`RCNNTraining.prepare_regions`. Training sets live in memory (the images, and the fc7 or
pool5 features of every region during stages 2 and 3); the paper's VOC-scale runs cached
features on disk instead.

Shapes: ``K`` regions, ``S`` = ``warp_size``, ``C`` classes, ``P`` pool5 and ``F`` fc7 features.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from rcnn_zoo.heads.rcnn_head import ClassSpecificSquaredError
from rcnn_zoo.losses.svm_hinge_loss import SVMHingeLoss
from rcnn_zoo.models.rcnn_region_data import RCNNRegionData, feature_scale
from rcnn_zoo.targets.regions import box_regression_targets
from rcnn_zoo.targets.svm_targets import (initial_negative_cache, mine_hard_negatives, svm_labels,
                                          svm_training_set)


class StageModel(keras.Model):
    """``fit`` on part of a detector: ``forward(x, training)`` over the layers in ``parts``,
    plus ``l2 · Σ kernel²`` over ``penalised`` kernels (biases are not regularised)."""

    def __init__(self, parts, forward, l2=0.0, penalised=(), **kwargs):
        super().__init__(**kwargs)
        self.parts = list(parts)
        self._forward = forward
        self.l2 = float(l2)
        penalised = tuple(penalised)
        self._penalised = lambda: penalised  # a callable: the variables are the parts' own
        self.built = True

    def call(self, x, training=False):
        return self._forward(x, training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if self.l2 and self._penalised():
            penalty = tf.add_n([tf.reduce_sum(tf.square(v)) for v in self._penalised()])
            loss = loss + self.l2 * penalty
        return loss


def _fit_linear(layer, features, targets, l2, loss, optimizer, epochs, batch_size, seed, verbose):
    """Fit one ``Dense`` layer on in-memory ``features [n, D]`` and ``targets``, with
    ``l2 · ‖kernel‖²``, continuing from its weights. Returns the ``History``."""
    stage = StageModel([layer], lambda x, training: layer(x), l2=l2, penalised=[layer.kernel],
                       name=f"rcnn_{layer.name}")
    stage.compile(optimizer=optimizer, loss=loss)
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    dataset = dataset.shuffle(len(features), seed=seed).batch(batch_size)
    return stage.fit(dataset, epochs=epochs, verbose=verbose)


def _zero(layer):
    layer.kernel.assign(tf.zeros_like(layer.kernel))
    layer.bias.assign(tf.zeros_like(layer.bias))


class RCNNTraining(RCNNRegionData):
    """The training stages of :class:`~rcnn_zoo.models.rcnn.RCNN` (a mixin: ``self`` is the
    detector, with its ``backbone``, ``fc_head``, ``res5``, ``rcnn_head`` and ``region_features``)."""

    def fit(self, *args, **kwargs):
        raise TypeError(
            "R-CNN trains in stages: regions = model.prepare_regions(images, boxes, labels); "
            "model.fine_tune(model.fine_tune_dataset(regions, ...)); model.train_svms(regions); "
            "model.train_box_regressors(regions)"
        )

    def fine_tune(self, regions_dataset, epochs=1, optimizer=None, bn_statistics_batches=20,
                  **fit_kwargs):
        """Stage 1: fine-tune the CNN as a (C+1)-way softmax classifier of warped regions.

        Args:
            regions_dataset: batches ``(regions [n,S,S,3] raw pixels, labels [n])`` with labels
                ``0`` = background, ``c + 1`` = class ``c`` (see :meth:`fine_tune_dataset`).
            epochs: passes over the dataset.
            optimizer: default SGD, learning rate 0.001 (the paper's: 1/10 of pre-training),
                momentum 0.9, weight decay 5e-4.
            bn_statistics_batches: afterwards, batch norm layers that train (the ``tiny``
                backbone's; VGG16 has none, ResNet's are frozen) get moving statistics averaged
                over this many batches (:meth:`recompute_batch_norm_statistics`); ``0`` skips.
            **fit_kwargs: passed to ``fit`` (``verbose``, ``callbacks``, ``steps_per_epoch``…).
        Returns:
            the ``History`` (``loss``, ``accuracy``).
        """

        def forward(regions, training):
            _, fc7 = self.region_features(regions, training=training)
            return self.rcnn_head.fine_tune_logits(fc7)

        parts = [self.backbone, self.fc_head, self.cls_score] + ([self.res5] if self.res5 is not None else [])
        stage = StageModel(parts, forward, name="rcnn_fine_tune")
        stage.compile(
            optimizer=optimizer or keras.optimizers.SGD(0.001, momentum=0.9, weight_decay=5e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        history = stage.fit(regions_dataset, epochs=epochs, **fit_kwargs)
        if bn_statistics_batches:
            self.recompute_batch_norm_statistics(regions_dataset, bn_statistics_batches)
        return history

    def recompute_batch_norm_statistics(self, regions_dataset, num_batches=20):
        """Set the moving mean and variance of every trainable batch norm layer to the average
        of its batch statistics over ``num_batches`` batches of ``regions_dataset``.

        The exponential moving averages lag far behind after a short fine-tuning from scratch
        (with momentum 0.99, 150 steps leave 22 % of the initial statistics), which wrecks
        inference-mode features; averaging afterwards fixes them (detectron2's "precise BN").
        Returns the number of batches used.
        """
        norms = [layer for model in (self.backbone, self.res5) if model is not None
                 for layer in model.layers
                 if isinstance(layer, layers.BatchNormalization) and layer.trainable]
        if not norms:
            return 0
        momenta = [layer.momentum for layer in norms]
        used = 0
        try:
            for used, (regions, _) in enumerate(regions_dataset.take(num_batches), start=1):
                for layer in norms:
                    layer.momentum = 1.0 - 1.0 / used  # running mean of the batch statistics
                self.region_features(regions, training=True)
        finally:
            for layer, momentum in zip(norms, momenta):
                layer.momentum = momentum
        return used

    def train_svms(self, regions, rounds=3, svm_c=1e-3, negative_iou=0.3, positive_weight=2.0,
                   initial_negatives=1000, hard_negatives_per_round=2000, epochs_per_round=10,
                   batch_size=128, optimizer=None, seed=0, verbose=0):
        """Stage 2: per-class linear SVMs on fc7 features, with hard negative mining.

        The SVMs are ``self.svm`` (``Dense(C)``, one column per class), trained by ``fit`` with
        the hinge loss (:class:`~rcnn_zoo.losses.SVMHingeLoss`) and ``l2 · ‖W‖²``,
        ``l2 = 1/(2·svm_c·n)`` for ``n`` training rows: the mean-loss form of liblinear's
        ``½‖w‖² + C·Σ hinge`` with the paper's ``C = 1e-3``. Features are scaled to a mean norm
        of 20 first (folded into the weights at the end).

        Mining: every class starts from ``initial_negatives`` random negatives; after each fit
        all regions are scored and up to ``hard_negatives_per_round`` of the highest-scoring
        uncached negatives above −1 − 1e-4 join the class's cache (:func:`~rcnn_zoo.targets.
        svm_targets.mine_hard_negatives`); then the SVMs are fitted again, continuing from their
        weights. ``rounds`` is the number of mining rounds (stops early when none is found).
        Unlike the original code, easy negatives (below −1.05) are never evicted: the features
        are in memory anyway, and eviction can empty a class's cache, after which its SVM,
        fitted on positives alone, drifts to accept everything.

        Args:
            optimizer: zero-argument callable returning an optimizer; default Adam(1e-3).
        Returns:
            ``{"histories": [History per fit], "mined": [[indices per class] per round] (into
            ``regions``, hardest first), "hard_negatives_added": [[count per class] per
            round], "cache_sizes": [[per class] per fit], "negative_cache": [K, C] bool}``.
        """
        labels = svm_labels(regions, negative_iou)
        positive, negative = labels > 0, labels < 0
        _, fc7 = self.extract_features(regions)
        scale = feature_scale(fc7)
        features = fc7 * scale
        cached = initial_negative_cache(negative, initial_negatives, np.random.default_rng(seed))
        _zero(self.svm)
        log = {"histories": [], "mined": [], "hard_negatives_added": [], "cache_sizes": []}
        for round_index in range(int(rounds) + 1):
            if round_index > 0:
                scores = features @ self.svm.kernel.numpy() + self.svm.bias.numpy()
                mined = [mine_hard_negatives(scores[:, c], negative[:, c], cached[:, c],
                                             hard_negatives_per_round)
                         for c in range(self.num_classes)]
                added = [len(new) for new in mined]
                for c, new in enumerate(mined):
                    cached[new, c] = True
                log["mined"].append(mined)
                log["hard_negatives_added"].append(added)
                if verbose:
                    print(f"SVM round {round_index}: hard negatives added per class {added}")
                if sum(added) == 0:
                    break
            rows, targets = svm_training_set(positive, cached)
            log["histories"].append(_fit_linear(
                self.svm, features[rows], targets, 1.0 / (2.0 * svm_c * len(rows)),
                SVMHingeLoss(positive_weight), optimizer() if optimizer else keras.optimizers.Adam(1e-3),
                epochs_per_round, batch_size, seed + round_index, verbose,
            ))
            log["cache_sizes"].append(cached.sum(axis=0).tolist())
        self.svm.kernel.assign(self.svm.kernel * scale)
        log["negative_cache"] = cached
        return log

    def train_box_regressors(self, regions, min_iou=0.6, ridge_lambda=1000.0, epochs=50,
                             batch_size=128, optimizer=None, seed=0, verbose=0):
        """Stage 3: class-specific ridge regression of box deltas from pool5 (appendix C).

        Pairs and targets from :func:`~rcnn_zoo.targets.regions.box_regression_targets`
        (IoU ≥ 0.6). ``self.bbox_regressor`` (``Dense(4C)``, zero-initialised) is fitted by least
        squares on the pair's class outputs (:class:`~rcnn_zoo.heads.rcnn_head.
        ClassSpecificSquaredError`) plus ``(ridge_lambda / n)·‖W‖²`` — the mean form of the
        paper's ``Σ‖t − Wφ‖² + λ‖W‖²`` with ``λ = 1000``, on pool5 features scaled to mean norm
        20 (folded into the weights at the end).

        Args:
            optimizer: zero-argument callable returning an optimizer; default Adam(1e-4).
        Returns:
            the ``History``, or ``None`` when there is no pair.
        """
        indices, targets, classes = box_regression_targets(regions, min_iou, self.box_weights)
        _zero(self.bbox_regressor)
        if len(indices) == 0:
            return None
        pool5, _ = self.extract_features(regions, indices)
        scale = feature_scale(pool5)
        history = _fit_linear(
            self.bbox_regressor, pool5 * scale,
            np.concatenate([targets, classes[:, None].astype(np.float32)], axis=1),
            ridge_lambda / len(indices), ClassSpecificSquaredError(self.num_classes),
            optimizer() if optimizer else keras.optimizers.Adam(1e-4), epochs, batch_size, seed,
            verbose,
        )
        self.bbox_regressor.kernel.assign(self.bbox_regressor.kernel * scale)
        return history
