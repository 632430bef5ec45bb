"""Test-wide set-up. Being at ``tests/``, this file puts ``tests/`` on ``sys.path`` (pytest's
default import mode), so test modules anywhere below import the shared helpers of
``tests/photo_copies.py`` as ``from photo_copies import ...``."""
