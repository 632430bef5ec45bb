"""Build and install rcnn_zoo.

The RoI ops in ``custom_ops/`` are compiled against the TensorFlow that is installed in the
environment doing the build, with the compile and link flags TensorFlow itself reports
(``tf.sysconfig``) so the C++ ABI always matches. Install with build isolation off so that the
build sees that TensorFlow rather than a fresh copy::

    pip install --no-build-isolation -e .

If TensorFlow cannot be imported at build time or the compiler fails, the package still installs
and the ops fall back to pure TensorFlow at run time (with one warning).
"""

import glob
import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

OPS_SOURCES = sorted(glob.glob(os.path.join("custom_ops", "*.cc")))


class TensorFlowBuildExt(build_ext):
    """Adds ``tf.sysconfig`` flags to the custom-op extension; a failure is a warning."""

    def build_extension(self, ext):
        try:
            import tensorflow as tf  # noqa: PLC0415  (imported only when building)
        except ImportError as error:
            self._warn(f"TensorFlow is not importable at build time ({error})")
            return
        ext.extra_compile_args = list(tf.sysconfig.get_compile_flags()) + [
            "-O3",
            "-fPIC",
            "-Wno-sign-compare",
            "-Wno-deprecated-declarations",
        ]
        ext.extra_link_args = list(tf.sysconfig.get_link_flags())
        try:
            super().build_extension(ext)
        except Exception as error:  # compiler missing or failing: keep the pure-TF ops
            self._warn(f"compiling {ext.name} failed ({error})")

    @staticmethod
    def _warn(reason):
        sys.stderr.write(
            f"WARNING: rcnn_zoo custom ops not built: {reason}. "
            "rcnn_zoo will use its pure-TensorFlow fallback ops.\n"
        )

    def get_export_symbols(self, ext):
        # A TensorFlow op library is not a Python module: it has no PyInit_ symbol to export.
        return []


setup(
    name="rcnn_zoo",
    version="0.1.0",
    description="Two-stage object detectors (R-CNN, Fast R-CNN, Faster R-CNN, R-FCN) for Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["rcnn_zoo", "rcnn_zoo.*"]),
    package_data={"rcnn_zoo": ["py.typed"]},
    data_files=[("rcnn_zoo_weights", glob.glob("weights/*"))],
    ext_modules=[
        Extension(
            "rcnn_zoo.ops._rcnn_zoo_ops",
            sources=OPS_SOURCES,
            language="c++",
            optional=True,
        )
    ]
    if OPS_SOURCES
    else [],
    cmdclass={"build_ext": TensorFlowBuildExt},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.8",
        "numpy",
        "pillow",
    ],
    extras_require={
        "proposals": ["opencv-contrib-python-headless"],
        "coco": ["pycocotools"],
        "onnx": ["tf2onnx", "onnx", "onnxruntime"],
        "test": ["pytest", "opencv-contrib-python-headless", "pycocotools", "tf2onnx", "onnx", "onnxruntime"],
    },
    entry_points={"console_scripts": ["rcnn-zoo=rcnn_zoo.cli:main"]},
)
