"""The optimizer and learning-rate curve of ``rcnn-zoo train``: AdamW (or SGD with momentum)
with gradients clipped to a global norm of 10, and a linear warm-up then cosine decay that is a
function of the epoch, so that a resumed run continues on the same curve."""

import math

import keras

from rcnn_zoo.errors import UsageError

__all__ = ["OPTIMIZERS", "CosineLearningRate", "build_optimizer"]

OPTIMIZERS = ("adam", "sgd")


def build_optimizer(config):
    """A fresh optimizer for :class:`~rcnn_zoo.training.TrainConfig` ``config``: ``adam``
    (AdamW when ``weight_decay`` > 0) or ``sgd`` (momentum 0.9), at ``config.lr``."""
    if config.optimizer == "adam":
        if config.weight_decay:
            return keras.optimizers.AdamW(config.lr, weight_decay=config.weight_decay, global_clipnorm=10.0)
        return keras.optimizers.Adam(config.lr, global_clipnorm=10.0)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.lr, momentum=0.9, weight_decay=config.weight_decay or None,
                                    global_clipnorm=10.0)
    raise UsageError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")


class CosineLearningRate(keras.callbacks.Callback):
    """Linear warm-up from 10 % over ``warmup_epochs``, then cosine decay to 1 % at
    ``epochs``, updated every batch; logs ``lr``. A function of (epoch, batch), so a
    resumed run continues on the same curve (stretched if ``epochs`` grew)."""

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs=1.0):
        super().__init__()
        self.base_lr, self.epochs = float(base_lr), float(epochs)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.warmup = float(warmup_epochs)
        self.epoch = 0
        self.value = self.base_lr

    def rate(self, t):
        """The learning rate at ``t`` epochs (fractional) into training."""
        if t < self.warmup:
            return self.base_lr * (0.1 + 0.9 * t / self.warmup)
        progress = min((t - self.warmup) / max(self.epochs - self.warmup, 1e-9), 1.0)
        return self.base_lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.value = self.rate(self.epoch + min(batch / self.steps_per_epoch, 1.0))
        self.model.optimizer.learning_rate = self.value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.value
