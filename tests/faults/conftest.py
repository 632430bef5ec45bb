"""Shared data and the one shared training run of the fault-injection suite.

``damaged_voc``: a VOC folder of real raccoon photos (copies, long side 128 px) with a train,
a val and a test split, each holding good photos and several kinds of damage at once (made by
``fault_cases.build_damaged_voc``; the expected outcome is ``fault_cases.EXPECTED``).
``trained_run``: ``rcnn-zoo train`` for one epoch on its train split, validating on its val
split; its ``last.keras`` is the model that the evaluate / predict / export tests use.
"""

import pytest

from fault_cases import build_damaged_voc
from faultkit import MODEL_ARGS, run_cli


@pytest.fixture(scope="session")
def damaged_voc(tmp_path_factory):
    return build_damaged_voc(tmp_path_factory.mktemp("damaged") / "voc")


@pytest.fixture(scope="session")
def trained_run(damaged_voc, tmp_path_factory):
    """``rcnn-zoo train --split train --val-split val`` on the damaged folder, 1 epoch."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_cli("train", "--data", damaged_voc.root, "--format", "voc", "--split", "train",
                     "--val-split", "val", *MODEL_ARGS, "--output-dir", out)
    return {"result": result, "out": out}


@pytest.fixture(scope="session")
def trained_model(trained_run):
    """The shared model (``last.keras`` of :func:`trained_run`); fails if training failed."""
    result = trained_run["result"]
    path = trained_run["out"] / "last.keras"
    if result.returncode != 0 or not path.is_file():
        pytest.fail(f"the shared training run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return path
