"""The Keras training protocol of a multi-task detector.

Training runs ONE forward pass per step: ``train_step`` calls the model with the ground truth,
the model samples RoIs from its own proposals during that pass, and ``compute_loss`` builds the
remaining targets from the ``y_pred`` it is given (keras-hub's convention). The model's
``compute_losses(y_pred)`` returns its named losses (each module's own); they are summed with
optional weights and each is logged under its name (``LOSS_NAMES``) next to the total ``loss``.

Under a ``tf.distribute`` strategy of N replicas (``docs/distributed.md``) each replica's loss is
1/N of its own batch's loss, the clip of the gradients acts on their sum over the replicas, and
training batch norm layers use the statistics of the global batch, so that N replicas of b
images train as one process on N·b images (exactly when every replica samples as many anchors
and RoIs, which the default fixed-size sampling does).
"""

import contextlib

import keras
import tensorflow as tf

from rcnn_zoo import losses as losses_module
from rcnn_zoo.backbones.frozen_norm import folding
from rcnn_zoo.export import export_saved_model

# The loss functions ``compile`` takes, their defaults, and the detector losses they compute.
LOSS_FUNCTIONS = {
    "rpn_objectness_loss": lambda: losses_module.RPNObjectnessLoss(name="rpn_objectness_loss"),
    "rpn_box_loss": lambda: losses_module.SmoothL1BoxLoss(beta=1.0 / 9.0, name="rpn_box_loss"),
    "classification_loss": losses_module.DetectionClassificationLoss,
    "box_loss": lambda: losses_module.DetectionBoxLoss(beta=1.0),
}


def _batch_size(x):
    """Batch size of the model input (a tensor, or a dict such as Fast R-CNN's)."""
    first = tf.nest.flatten(x)[0]
    return tf.shape(first)[0]


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _multi_worker(strategy):
    """Whether ``strategy`` spans several workers: then Keras reduces each step's logs with a
    cross-worker ``strategy.reduce("MEAN", v, axis=0)`` (and its build step, see
    :meth:`MultiTaskDetector._maybe_symbolic_build`). The test is the one Keras makes."""
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        in_multi_worker_mode and in_multi_worker_mode())


@contextlib.contextmanager
def _batch_norm_across_replicas(model):
    """While tracing a training step over several replicas, let every training batch norm
    layer of ``model`` compute its batch statistics over the GLOBAL batch (Keras'
    ``synchronized`` moments: all-reduced sums), so that N replicas of b images train as one
    process on N·b images. The flag is restored afterwards: it only matters while the step is
    traced, and a saved model keeps its own config."""
    if _num_replicas() == 1:
        yield
        return
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = False


def _clip_summed_gradients(optimizer, gradients):
    """This replica's share of the clipped SUM of the replicas' gradients.

    Keras optimizers clip (``clipnorm``, ``global_clipnorm``, ``clipvalue``) each replica's own
    gradients before summing them across replicas, so with N replicas the clip would act on
    partial gradients. Here the sum is formed first (one extra all-reduce, only when the
    optimizer clips), clipped as the optimizer would clip it, and each replica passes on 1/N of
    it: the optimizer's own clip then finds nothing to clip (every norm and value is at most
    1/N of its limit) and its sum over replicas gives back the clipped global gradient.
    """
    replicas, context = _num_replicas(), tf.distribute.get_replica_context()
    if replicas == 1 or context is None or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return gradients  # (a LossScaleOptimizer's gradients are scaled: it clips after unscaling)
    if not (optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue):
        return gradients
    present = [i for i, g in enumerate(gradients) if g is not None]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
    # The optimizer's own clip (Keras ≥ 3.0 BaseOptimizer), so the rule is exactly the one it
    # would apply in one process.
    summed = optimizer._clip_gradients(summed)
    shares = list(gradients)
    for i, g in zip(present, summed):
        shares[i] = g / float(replicas)
    return shares


class MultiTaskDetector(keras.Model):
    """``compile``/``fit``/``evaluate``/``predict``/``export`` for a model whose ``call(x,
    training, ground_truth)`` returns, with ground truth, what its ``compute_losses`` needs."""

    LOSS_NAMES = ()

    def __call__(self, *args, **kwargs):
        # Every pass of the detector (fit, predict, export traces) runs its frozen batch norms
        # folded into their convs; its layers called on their own stay Keras' (frozen_norm.py).
        with folding():
            return super().__call__(*args, **kwargs)

    # ------------------------------------------------------------------ training protocol
    def compile(
        self,
        optimizer=None,
        rpn_objectness_loss=None,
        rpn_box_loss=None,
        classification_loss=None,
        box_loss=None,
        loss_weights=None,
        **kwargs,
    ):
        """Configure training. Every argument has a sensible default.

        Args:
            optimizer: default SGD(lr 0.01, momentum 0.9, weight decay 1e-4, clipnorm 10), the
                papers' optimiser (the clip guards the first steps from scratch).
            rpn_objectness_loss, rpn_box_loss, classification_loss, box_loss: Loss instances or
                names to replace the defaults (see ``rcnn_zoo.losses``).
            loss_weights: optional ``{loss name: weight}`` over ``LOSS_NAMES`` (default 1 each;
                the logged per-loss values stay unweighted). Used by alternating training.
            **kwargs: passed to ``keras.Model.compile`` (``metrics``, ``jit_compile``, …).
                ``loss`` is not accepted: the detector's losses are the four above.
        """
        if "loss" in kwargs and kwargs["loss"] is not None:
            raise ValueError(
                "Detectors compute their own multi-task loss; pass rpn_objectness_loss=, "
                "rpn_box_loss=, classification_loss= or box_loss= instead of loss="
            )
        kwargs.pop("loss", None)
        if optimizer is None:
            optimizer = keras.optimizers.SGD(
                learning_rate=0.01, momentum=0.9, weight_decay=1e-4, global_clipnorm=10.0
            )
        given = dict(rpn_objectness_loss=rpn_objectness_loss, rpn_box_loss=rpn_box_loss,
                     classification_loss=classification_loss, box_loss=box_loss)
        unknown = set(loss_weights or {}) - set(self.LOSS_NAMES)
        if unknown:
            raise ValueError(f"loss_weights names {sorted(unknown)} are not in {self.LOSS_NAMES}")
        self.loss_weights_by_name = {name: 1.0 for name in self.LOSS_NAMES}
        self.loss_weights_by_name.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.loss_functions = {
            key: keras.losses.get(value) if value is not None else LOSS_FUNCTIONS[key]()
            for key, value in given.items()
        }
        # NMS and the custom RoI ops have no XLA kernels: never let "auto" pick XLA on a GPU.
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        if getattr(self, "loss_functions", None):
            config = dict(config)
            for key, loss in self.loss_functions.items():
                config[key] = keras.saving.serialize_keras_object(loss)
            config["loss_weights"] = dict(self.loss_weights_by_name)
        return config

    def compile_from_config(self, config):
        config = dict(config)
        for key in LOSS_FUNCTIONS:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        optimizer = config.pop("optimizer", None)
        if optimizer is not None:
            optimizer = keras.saving.deserialize_keras_object(optimizer)
        allowed = set(LOSS_FUNCTIONS) | {"loss_weights", "metrics", "jit_compile", "steps_per_execution",
                                         "run_eagerly"}
        self.compile(optimizer=optimizer, **{k: v for k, v in config.items() if k in allowed and v is not None})
        if self.built and hasattr(self.optimizer, "build"):
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Total multi-task loss; targets come from ``y_pred`` (its ground truth and samples).

        Each part is logged as a mean over the epoch's images, weighted by batch size exactly
        as Keras weights ``loss``, so the logged parts add up to the logged ``loss``.
        """
        del y, sample_weight, training
        if not getattr(self, "loss_functions", None):
            raise RuntimeError("Call model.compile() before fit/evaluate.")
        parts = self.compute_losses(y_pred)
        weights = getattr(self, "loss_weights_by_name", {})
        total = tf.add_n(
            [tf.cast(v, tf.float32) * weights.get(name, 1.0) for name, v in parts.items()]
        )
        replicas = float(_num_replicas())
        # The weight depends on the batch, so a step whose input ran out (Keras runs one at the
        # end of an epoch of unknown length) updates nothing; a constant weight of 1 would be
        # counted before the failed read aborts the step and shrink the mean to n/(n+1).
        images = tf.cast(_batch_size(x), tf.float32) if x is not None else None
        for tracker in self.loss_trackers:
            tracker.update_state(parts[tracker.name], sample_weight=images)
        if self.losses:
            total = total + tf.add_n([tf.cast(tf.reduce_sum(l), tf.float32) for l in self.losses])
        # Each part is already a whole-batch scalar, which Keras' Loss.__call__ returns as it is
        # (it divides by the replica count only when it reduces per-element values itself). The
        # optimizer SUMS the replicas' gradients, so each replica contributes 1/N: with equal
        # per-replica batches this is the gradient of the global batch's loss.
        return total / replicas

    def _forward_with_targets(self, data, training):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(
                "fit/evaluate need targets: a dataset of (images, {'boxes': ..., 'labels': ...})"
            )
        y_pred = self(x, training=training, ground_truth=y)
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        return x, y, y_pred, sample_weight, loss

    def train_step(self, data):
        with tf.GradientTape() as tape, _batch_norm_across_replicas(self):
            x, y, y_pred, sample_weight, loss = self._forward_with_targets(data, training=True)
            self._loss_tracker.update_state(loss * _num_replicas(), sample_weight=_batch_size(x))
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = _clip_summed_gradients(self.optimizer, tape.gradient(scaled, variables))
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, y_pred, sample_weight, loss = self._forward_with_targets(data, training=False)
        self._loss_tracker.update_state(loss * _num_replicas(), sample_weight=_batch_size(x))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Compiled metrics expect plain tensors; detectors log their losses (and mAP through
        # rcnn_zoo.evaluation.MeanAveragePrecisionCallback), so only report the trackers.
        results = {m.name: m.result() for m in self.metrics}
        if _multi_worker(self.distribute_strategy):
            # Across workers Keras reduces each logged value with reduce("MEAN", v, axis=0),
            # which a scalar has no axis for (keras-team/keras#20585). The trackers' variables
            # are already summed over replicas, so every replica holds the same result and the
            # mean over a [1] axis returns it unchanged.
            results = {name: value[None] for name, value in results.items()}
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras builds the optimizer and metrics from one batch before the first step; across
        workers it first merges a distributed batch with ``strategy.reduce("MEAN", batch)``,
        which fails on a nest of tensors (keras-team/keras#20585). The build needs only shapes
        and dtypes, so hand it this worker's first replica's part of that batch instead."""
        if iterator is not None and data_batch is None and _multi_worker(self.distribute_strategy):
            local = self.distribute_strategy.experimental_local_results
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(lambda v: local(v)[0], next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    # ------------------------------------------------------------------ export
    def export(self, filepath, format="tf_saved_model", verbose=True, input_type="image_tensor", **kwargs):
        """Write the detector for serving (Keras 3's export entry point).

        ``format="tf_saved_model"``: a SavedModel for TF Serving with only stock TensorFlow ops
        (the pure-TF RoI ops); see :func:`rcnn_zoo.export.export_saved_model` for ``input_type``,
        the signature and ``kwargs``. ``format="onnx"``: one ``.onnx`` file with the same inputs
        and outputs, for onnxruntime; see :func:`rcnn_zoo.onnx_export.export_onnx` (``kwargs``:
        ``padded``, ``opset``).
        """
        if format == "tf_saved_model":
            return export_saved_model(self, filepath, input_type=input_type, verbose=verbose, **kwargs)
        if format == "onnx":
            from rcnn_zoo.onnx_export import export_onnx  # noqa: PLC0415  (tf2onnx is optional)

            return export_onnx(self, filepath, input_type=input_type, verbose=verbose, **kwargs)
        raise ValueError(
            f"rcnn_zoo detectors export format 'tf_saved_model' or 'onnx', got {format!r}"
        )
