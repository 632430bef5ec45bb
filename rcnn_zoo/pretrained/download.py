"""Downloading a registered weights file into the cache, with ``keras.utils.get_file`` (which
also takes ``file://`` URLs), and the errors that say how to do without a network.

The cache is ``<cache>/rcnn_zoo/`` with ``<cache>`` the ``cache_dir=`` argument, else
``$RCNN_ZOO_CACHE_DIR``, else Keras' ``~/.keras``.
"""

import os
import tempfile
import urllib.parse

import keras

from rcnn_zoo.pretrained.errors import WeightsDownloadError
from rcnn_zoo.pretrained.integrity import file_sha256, hash_error, verify

CACHE_DIR_ENV = "RCNN_ZOO_CACHE_DIR"
CACHE_SUBDIR = "rcnn_zoo"


def _keras_home():
    try:
        from keras.src.backend.config import keras_home  # noqa: PLC0415 (private accessor)

        return keras_home()
    except ImportError:
        return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def cache_folder(cache_dir):
    """``(base, folder)``: the ``cache_dir`` to give ``keras.utils.get_file`` and the folder it
    will use for ``cache_subdir="rcnn_zoo"``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or None
    if cache_dir is None:
        cache_dir = _keras_home()
    base = os.path.expanduser(cache_dir)
    try:  # get_file falls back to /tmp/.keras when the folder does not exist yet
        os.makedirs(base, exist_ok=True)
    except OSError:
        pass
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return base, os.path.join(base, CACHE_SUBDIR)


def download(name, entry, cache_dir):
    """Path of the downloaded file of registered ``name``, fetched unless cached, verified.

    Raises:
        WeightsIntegrityError: SHA-256 mismatch (expected, got and the file named).
        WeightsDownloadError: the download failed (the URL is named, with the offline way).
    """
    url = entry["url"]
    file_name = entry.get("file_name") or os.path.basename(urllib.parse.urlsplit(url).path)
    base, folder = cache_folder(cache_dir)
    target = os.path.join(folder, file_name)
    full = entry.get("sha256") or None
    try:
        path = keras.utils.get_file(
            file_name,
            origin=url,
            file_hash=full,
            hash_algorithm="sha256",
            cache_subdir=CACHE_SUBDIR,
            cache_dir=base,
        )
    except ValueError as error:
        if full and os.path.exists(target) and "hash" in str(error).lower():
            raise hash_error(name, target, full, file_sha256(target), url) from error
        raise _download_error(name, url, target, entry, error) from error
    except Exception as error:  # URLError/HTTPError wrapped by Keras, OSError, ...
        raise _download_error(name, url, target, entry, error) from error
    verify(name, path, entry, url, known_good=bool(full))
    return path


def _download_error(name, url, target, entry, error):
    if entry.get("convert"):
        local = (
            f"place the downloaded file at {target} (it is then verified and converted), or "
            "convert it yourself (rcnn-zoo convert --from ... --input file.pth --output "
            "file.weights.h5) and pass weights='/path/to/file.weights.h5'"
        )
    else:
        local = f"place the file at {target}, or pass weights='/path/to/file.weights.h5' (or .keras)"
    return WeightsDownloadError(
        f"Could not download the {name!r} weights from {url} ({type(error).__name__}: {error}). "
        f"Without network access, download it elsewhere and {local}."
    )
