"""The loadable file of a registered name: the entry's local file (verified), else its download
(verified), converted once when it is a PyTorch checkpoint."""

import os

from rcnn_zoo.pretrained.conversion import convert_registered, converted_path
from rcnn_zoo.pretrained.download import download
from rcnn_zoo.pretrained.integrity import verify
from rcnn_zoo.pretrained.registry import get_weights_entry, local_file


def weights_file(name, cache_dir=None, detector=None):
    """Local path of the loadable ``.weights.h5`` / ``.keras`` file of registered ``name``:
    downloaded, verified and converted as needed (see :mod:`rcnn_zoo.pretrained`). ``detector``:
    the detector class to convert a PyTorch checkpoint into (needed the first time only; this
    package sits below the models and builds none itself)."""
    entry = get_weights_entry(name)
    if entry.get("file"):
        path = local_file(entry)
        if path.is_file():
            verify(name, path, entry, local=True)
            return str(path)
        if not entry.get("url"):
            raise FileNotFoundError(
                f"The {name!r} weights are a local file that is not there: {path}. "
                f"{entry.get('source', '')}".strip()
            )
    if not entry.get("url"):
        raise ValueError(f"registry entry {name!r} has neither 'url' nor 'file'")
    source_path = download(name, entry, cache_dir)
    if not entry.get("convert"):
        return source_path
    converted = converted_path(entry, source_path)
    if not os.path.exists(converted):
        convert_registered(name, entry, source_path, converted, detector)
    return converted
