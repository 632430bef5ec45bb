"""Convolutional box head: a stack of 3×3 convs (with batch norm) on the pooled RoI features, then
fully connected layers — the "4conv1fc" head of Wu & He 2018 ("Group Normalization", with BN
here) used by torchvision's ``fasterrcnn_resnet50_fpn_v2`` (Li et al. 2021, "Benchmarking
Detection Transfer Learning with Vision Transformers"), there ``FastRCNNConvFCHead``.

Shapes: K RoIs, pooled ``ph × pw`` with C channels.
"""

import keras
from keras import layers, ops

from rcnn_zoo.backbones.resnet import _BN_EPSILON


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class ConvFCBoxHead(layers.Layer):
    """``[conv 3×3 (no bias) → BN → ReLU] × len(conv_channels)`` → flatten → ``[FC → ReLU] ×
    len(fc_dims)``.

    ``[K, 7, 7, C]`` → ``[K, fc_dims[-1]]`` (torchvision v2: ``[K, 7, 7, 256]`` → ``[K, 1024]``
    with ``conv_channels=(256, 256, 256, 256)``, ``fc_dims=(1024,)``).

    The flatten is in ``(y, x, channel)`` order (channels-last); a PyTorch checkpoint, which
    flattens ``(channel, y, x)``, has the input rows of its first FC permuted by the converter
    (:func:`rcnn_zoo.convert.common.fc_after_pool_kernel`).

    Args:
        conv_channels: output channels of each 3×3 conv (``()`` for none).
        fc_dims: width of each fully connected layer (at least one).
        norm: batch norm after each conv (its conv then has no bias, as in torchvision);
            ``False``: conv with bias, then ReLU.
        dropout: dropout after each FC's ReLU (training only).
        epsilon: the batch norms' ε (rcnn_zoo's 1.001e-5; converters fold PyTorch's 1e-5 into γ).

    Layers: ``conv1 … convN``, ``bn1 … bnN``, ``fc1 … fcM``.
    """

    def __init__(
        self,
        conv_channels=(256, 256, 256, 256),
        fc_dims=(1024,),
        norm=True,
        dropout=0.0,
        epsilon=_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.conv_channels = tuple(int(c) for c in conv_channels)
        self.fc_dims = tuple(int(d) for d in fc_dims)
        if not self.fc_dims:
            raise ValueError("ConvFCBoxHead needs at least one fully connected layer (fc_dims)")
        self.norm = bool(norm)
        self.dropout = float(dropout)
        self.epsilon = float(epsilon)
        init = keras.initializers.HeNormal()  # torchvision: kaiming_normal_(fan_out, relu)
        self.convs, self.norms = [], []
        for i, channels in enumerate(self.conv_channels):
            self.convs.append(
                layers.Conv2D(
                    channels, 3, padding="same", use_bias=not self.norm, kernel_initializer=init,
                    dtype=self.dtype_policy, name=f"conv{i + 1}",
                )
            )
            if self.norm:
                self.norms.append(
                    layers.BatchNormalization(
                        axis=-1, epsilon=self.epsilon, dtype=self.dtype_policy, name=f"bn{i + 1}"
                    )
                )
        self.fcs = [
            layers.Dense(dim, activation="relu", dtype=self.dtype_policy, name=f"fc{i + 1}")
            for i, dim in enumerate(self.fc_dims)
        ]
        self.drops = [layers.Dropout(self.dropout, dtype=self.dtype_policy) for _ in self.fc_dims]

    def build(self, input_shape):
        height, width, channels = (int(d) for d in input_shape[1:4])
        for i, conv in enumerate(self.convs):
            conv.build((None, height, width, channels))
            channels = self.conv_channels[i]
            if self.norm:
                self.norms[i].build((None, height, width, channels))
        flat = height * width * channels
        for fc, dim in zip(self.fcs, self.fc_dims):
            fc.build((None, flat))
            flat = dim
        self.built = True

    def call(self, pooled, training=False):
        x = pooled
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norm:
                x = self.norms[i](x, training=training)
            x = ops.relu(x)
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], -1))
        for fc, drop in zip(self.fcs, self.drops):
            x = drop(fc(x), training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.fc_dims[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "conv_channels": list(self.conv_channels),
                "fc_dims": list(self.fc_dims),
                "norm": self.norm,
                "dropout": self.dropout,
                "epsilon": self.epsilon,
            }
        )
        return config
