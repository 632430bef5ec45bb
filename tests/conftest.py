"""Test-wide set-up. Being at ``tests/``, this file puts ``tests/`` on ``sys.path`` (pytest's
default import mode), so test modules anywhere below import the shared helpers of
``tests/photo_copies.py`` as ``from photo_copies import ...``."""

import keras
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--dtype-policy",
        default=None,
        help="build every model under this Keras dtype policy (e.g. mixed_bfloat16); "
        "`pytest tests/models -k learns --dtype-policy mixed_bfloat16` checks that the "
        "detectors still learn when their layers compute in bfloat16",
    )


@pytest.fixture(autouse=True, scope="session")
def _session_dtype_policy(request):
    """The ``--dtype-policy`` option: the global policy for the whole run, restored after."""
    name = request.config.getoption("--dtype-policy")
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    yield
    keras.config.set_dtype_policy(previous)
