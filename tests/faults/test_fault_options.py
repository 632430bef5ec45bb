"""Option values that cannot train: ``rcnn-zoo train`` exits with code 2 and one line naming the
option and its allowed range, before reading data or writing anything into --output-dir.

All of them run through ``rcnn_zoo.cli.main`` (the entry point) in this process; two also as a
child process, as a user runs them."""

import re

import pytest

from rcnn_zoo import cli

from faultkit import MODEL_ARGS, assert_usage_error, run_cli

NUMBER = "(?:a finite number|a number)"
INTEGER = "an integer"
# (options, the option named, the allowed range as the message states it (a regex), the value)
BAD_OPTIONS = [
    (["--lr", "nan"], "--lr", f"{NUMBER} > 0", "nan"),
    (["--lr", "-1"], "--lr", f"{NUMBER} > 0", "-1.0"),
    (["--lr", "0"], "--lr", f"{NUMBER} > 0", "0.0"),
    (["--flip", "2"], "--flip", f"{NUMBER} ≥ 0 and ≤ 1", "2.0"),
    (["--random-crop", "-0.1"], "--random-crop", f"{NUMBER} ≥ 0 and ≤ 1", "-0.1"),
    (["--anchor-sizes", "-5", "0"], "--anchor-sizes", f"{NUMBER} > 0", "-5.0"),
    (["--batch-size", "0"], "--batch-size", f"{INTEGER} ≥ 1", "0"),
    (["--epochs", "0"], "--epochs", f"{INTEGER} ≥ 1", "0"),
    (["--image-min-size", "0"], "--image-min-size", f"{INTEGER} ≥ 1", "0"),
]


def _argv(damaged_voc, out, options):
    # The model options first: the bad option given last overrides a good one given before.
    return ["train", "--data", damaged_voc.root, "--split", "train", *MODEL_ARGS, *options, "--output-dir", out]


@pytest.mark.parametrize("options, option, allowed, got", BAD_OPTIONS, ids=[" ".join(o[0]) for o in BAD_OPTIONS])
def test_a_bad_option_is_one_line_naming_it_and_its_range(options, option, allowed, got, damaged_voc, tmp_path,
                                                          capsys):
    out = tmp_path / "out"
    code = cli.main(_argv(damaged_voc, out, options))
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert re.fullmatch(rf"rcnn-zoo: error: {option} must be {allowed}, got {re.escape(got)}", lines[0]), lines
    assert "warning" not in captured.err  # stopped before reading the data
    assert captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize("options, option, allowed, got", [BAD_OPTIONS[0], BAD_OPTIONS[5]],
                         ids=["--lr nan", "--anchor-sizes -5 0"])
def test_a_bad_option_from_the_command_line(options, option, allowed, got, damaged_voc, tmp_path):
    out = tmp_path / "out"
    result = run_cli(*_argv(damaged_voc, out, options))
    line = assert_usage_error(result, option)
    assert re.fullmatch(rf"rcnn-zoo: error: {option} must be {allowed}, got {re.escape(got)}", line), line
    assert result.stderr.strip() == line and result.stdout == ""
    assert not out.exists()
