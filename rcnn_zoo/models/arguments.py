"""A detector's hyperparameters: where each one lives and which value wins.

Every hyperparameter belongs to the module that uses it and has the paper's default in that
module's signature: ``anchor_*`` and ``rpn_*`` to :class:`~rcnn_zoo.heads.RegionProposalNetwork`
(``rpn_nms_threshold`` → its ``nms_threshold``), ``roi_*`` to the RoI head (``roi_head_dim`` →
``head_dim``), and the image rule (``image_min_size``, ``image_max_size``, ``resize_rounding``,
``size_divisible``) and ``roi_levels`` to the detector. A detector passes them through as
prefixed keywords (``FasterRCNN(rpn_post_nms_top_n_test=300)``), and the value used is, from
weakest to strongest:

1. the module's signature (the paper that introduced the module);
2. the detector's own paper where it differs (``FasterRCNN.PAPER_DEFAULTS``, plain data);
3. the backbone's defaults (``Backbone.defaults``: e.g. torchvision's settings for
   ``resnet50_fpn``, the tiny backbone's narrow head);
4. the registered preset of ``weights=<name>`` (or the ``.keras`` file's own configuration);
5. what the caller passed.
"""

import inspect

from rcnn_zoo.weights import preset_arguments

# Hyperparameters the detector itself reads (image rule and which maps the RoI head pools).
DETECTOR_KEYS = ("image_min_size", "image_max_size", "resize_rounding", "size_divisible", "roi_levels")
# Module arguments that come from the backbone or the detector, never from a keyword.
WIRED = frozenset({"self", "num_classes", "strides", "stride", "in_channels", "res5", "kwargs"})


def signature_defaults(cls):
    """``{argument: default}`` of ``cls.__init__`` and its bases' (the paper's values)."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith(("keras", "builtins")):
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if name not in WIRED and parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults


def rpn_keyword(argument):
    """RPN argument → the detector keyword naming it (``nms_threshold`` → ``rpn_nms_threshold``;
    ``anchor_sizes`` keeps its name)."""
    return argument if argument.startswith("anchor_") else f"rpn_{argument}"


def roi_keyword(argument):
    """RoI-head argument → the detector keyword naming it (``head_dim`` → ``roi_head_dim``)."""
    return f"roi_{argument}"


def prefixed_defaults(module_class, keyword):
    """The module's signature defaults under the detector's keywords."""
    return {keyword(name): value for name, value in signature_defaults(module_class).items()}


def module_arguments(hyperparameters, module_class, keyword):
    """The resolved ``hyperparameters`` (detector keywords) → ``module_class``'s arguments."""
    names = signature_defaults(module_class)
    return {name: hyperparameters[keyword(name)] for name in names if keyword(name) in hyperparameters}


def resolve(defaults, backbone_defaults, given):
    """Paper/detector ``defaults`` < the backbone's (for keys this detector knows) < ``given``.

    Raises:
        TypeError: ``given`` names a hyperparameter this detector does not have.
    """
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    resolved = dict(defaults)
    resolved.update({k: v for k, v in backbone_defaults.items() if k in defaults})
    resolved.update(given)
    return resolved


def with_weights(cls, detector, weights, passed):
    """Arguments of ``cls(…, weights=weights)`` for a detector whose signature holds its own
    defaults (R-CNN): a preset's or ``.keras`` file's configuration replaces every argument left
    at its default; what the caller changed wins (and may not change the architecture).

    Args:
        passed: ``{argument: value}`` as bound by the constructor call.
    """
    if weights is None:
        return passed
    defaults = {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    changed = {k: v for k, v in passed.items() if v is not None and v != defaults.get(k)}
    return {**passed, **preset_arguments(detector, weights, changed)}
