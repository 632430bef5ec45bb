"""Every command starts without TensorFlow's C++ start-up noise (oneDNN, CUDA drivers, CPU
features), which TF 2.21 prints before its log level applies; other stderr output still shows."""

import os

from photo_copies import run_cli

from rcnn_zoo import _quiet

NOISE = ("absl::InitializeLog", "cudart_stub", "cuda_platform", "cpu_feature_guard", "oneDNN custom operations")


def test_the_cli_starts_quietly_without_any_log_level_set():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # A command that loads TensorFlow (as every command does) and then fails at once.
    env_result = run_cli("export", "--model", "no_such.keras", "--output", "x", env=env)
    assert env_result.returncode == 2
    assert env_result.stderr.strip().splitlines() == ["rcnn-zoo: error: model file not found: no_such.keras"]
    for word in NOISE:
        assert word not in env_result.stderr + env_result.stdout


def test_only_the_known_start_up_lines_are_held_back(capsys):
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796125733.803942   29963 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796125733.804351   29963 cudart_stub.cc:31] Could not find cuda drivers\n"
        "E0000 00:00:1796125737.091191   29963 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.\n"
        "E0000 00:00:1796125737.091191   29963 op_kernel.cc:1857] something that matters\n"
        "ImportError: libfoo.so: cannot open shared object file\n"
    )
    _quiet._replay(text)
    shown = capsys.readouterr().err.splitlines()
    assert shown == [
        "E0000 00:00:1796125737.091191   29963 op_kernel.cc:1857] something that matters",
        "ImportError: libfoo.so: cannot open shared object file",
    ]
