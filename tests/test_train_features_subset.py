"""train_features.py --limit_train N: the first N train images (both renders, their labels), every class name
kept (the same classifier head), the whole val split; a bad N is the one-line flag error."""

import pytest
import torch

from training.train_features import load_split, parse_args


def test_limit_train_takes_the_first_n_images_and_keeps_every_class():
    x32, x64, y, names = load_split("train")
    s32, s64, sy, snames = load_split("train", 5)
    assert len(s32) == len(s64) == len(sy) == 5 and snames == names
    assert torch.equal(s32, x32[:5]) and torch.equal(s64, x64[:5]) and torch.equal(sy, y[:5])
    assert parse_args(["--output_dir", "o"]).limit_train is None
    assert parse_args(["--output_dir", "o", "--limit_train", "16"]).limit_train == 16


@pytest.mark.parametrize("typed,message", [("0", "--limit_train=0 is not allowed: an int >= 1"),
                                            ("-3", "--limit_train=-3 is not allowed: an int >= 1"),
                                            ("2.5", "--limit_train='2.5' is not allowed: an int")])
def test_bad_limit_train_names_the_flag(typed, message, capsys):
    with pytest.raises((ValueError, SystemExit)) as exc:   # a range error after parsing, or argparse's type error
        parse_args(["--output_dir", "o", f"--limit_train={typed}"])
    assert message in (str(exc.value) if exc.type is ValueError else capsys.readouterr().err)
