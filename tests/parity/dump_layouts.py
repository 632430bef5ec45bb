"""Dump the state-dict layout (key, shape, dtype) of the torchvision detectors used by the parity test.

Runs in the torch env only (never imported by rcnn_zoo or CI):
    /tmp/torchvision-venv/bin/python tests/parity/dump_layouts.py
writes tests/parity/layouts/<model>.json.
"""

import json
import os

import torch
import torchvision

MODELS = [
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
]

HERE = os.path.dirname(os.path.abspath(__file__))


def build(name):
    return getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None)


def layout(model):
    return [
        {"key": key, "shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
        for key, value in model.state_dict().items()
    ]


def main():
    torch.manual_seed(0)
    os.makedirs(os.path.join(HERE, "layouts"), exist_ok=True)
    for name in MODELS:
        entries = layout(build(name))
        doc = {"model": name, "builder_kwargs": {"weights": None, "weights_backbone": None},
               "torch": torch.__version__, "torchvision": torchvision.__version__,
               "num_keys": len(entries), "state_dict": entries}
        path = os.path.join(HERE, "layouts", name + ".json")
        with open(path, "w") as f:
            f.write(json.dumps(doc, indent=None, separators=(",", ":")).replace('},{', '},\n{') + "\n")
        print(name, len(entries), "keys ->", os.path.relpath(path))


if __name__ == "__main__":
    main()
