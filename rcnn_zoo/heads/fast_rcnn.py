"""Fast R-CNN box head (Girshick 2015) and predictor.

Pooled RoI features ``[K, ph, pw, C]`` → a vector per RoI → class logits over C+1 classes
(index 0 = background) and class-specific box deltas ``[K, C+1, 4]`` (row 0 unused, kept so
torchvision/py-faster-rcnn checkpoints map one to one).
"""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class FCBoxHead(layers.Layer):
    """Flatten → FC(dim) → ReLU → [dropout] → FC(dim) → ReLU → [dropout] (fc6/fc7).

    ``[K, ph, pw, C]`` → ``[K, dim]``.
    """

    def __init__(self, dim=1024, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.dropout = dropout
        self.fc6 = self._fc("fc6")
        self.fc7 = self._fc("fc7")
        self.drop6 = layers.Dropout(dropout, dtype=self.dtype_policy)
        self.drop7 = layers.Dropout(dropout, dtype=self.dtype_policy)

    def _fc(self, name):
        """One fully connected layer of the head (subclasses replace it, e.g. by SVD factors)."""
        return layers.Dense(self.dim, activation="relu", dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        flat = int(input_shape[1]) * int(input_shape[2]) * int(input_shape[3])
        self.fc6.build((None, flat))
        self.fc7.build((None, self.dim))
        self.built = True

    def call(self, pooled, training=False):
        shape = ops.shape(pooled)
        x = ops.reshape(pooled, (shape[0], -1))
        x = self.drop6(self.fc6(x), training=training)
        return self.drop7(self.fc7(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "dropout": self.dropout})
        return config


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class Res5BoxHead(layers.Layer):
    """ResNet C4 head: conv5 stage on 14×14 RoI features, then global average pooling.

    ``[K, 14, 14, 1024]`` → ``[K, 2048]`` (He et al. 2016, appendix A). The conv5 model comes from
    the backbone builder; this layer is rebuilt from the detector's config, not serialised alone.
    """

    def __init__(self, res5, **kwargs):
        super().__init__(**kwargs)
        self.res5 = res5

    def build(self, input_shape):
        self.built = True

    def call(self, pooled, training=False):
        return ops.mean(self.res5(pooled, training=training), axis=(1, 2))


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class BoxPredictor(layers.Layer):
    """Sibling FC layers: ``[K, D]`` → ``(logits [K, C+1], deltas [K, C+1, 4])``.

    Initialised as in the paper: N(0, 0.01) for scores, N(0, 0.001) for deltas.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.cls_score = layers.Dense(
            num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=self.dtype_policy,
            name="cls_score",
        )
        self.bbox_pred = layers.Dense(
            4 * (num_classes + 1),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype=self.dtype_policy,
            name="bbox_pred",
        )

    def build(self, input_shape):
        self.cls_score.build(input_shape)
        self.bbox_pred.build(input_shape)
        self.built = True

    def call(self, x):
        logits = self.cls_score(x)
        deltas = ops.reshape(self.bbox_pred(x), (-1, self.num_classes + 1, 4))
        return logits, deltas

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config
