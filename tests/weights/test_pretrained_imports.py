"""``rcnn_zoo.pretrained`` sits below the models: it imports none of the packages above it, and
``rcnn_zoo.weights`` hands on its public names."""

import ast
import pathlib

import rcnn_zoo
from rcnn_zoo import pretrained, weights

ABOVE = ("rcnn_zoo.models", "rcnn_zoo.training", "rcnn_zoo.cli", "rcnn_zoo.inference", "rcnn_zoo.evaluation")
PACKAGE = pathlib.Path(pretrained.__file__).parent


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # deferred imports inside functions count too
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_pretrained_imports_nothing_above_it():
    upward = {
        (path.name, module)
        for path in PACKAGE.glob("*.py")
        for module in _imported_modules(path)
        if module.startswith(ABOVE)
    }
    assert not upward


def test_the_convert_package_imports_no_model():
    folder = pathlib.Path(rcnn_zoo.__file__).parent / "convert"
    upward = {(p.name, m) for p in folder.glob("*.py") for m in _imported_modules(p) if m.startswith(ABOVE)}
    assert not upward


def test_the_face_hands_on_every_public_name():
    for name in pretrained.__all__:
        assert getattr(weights, name) is getattr(pretrained, name), name
