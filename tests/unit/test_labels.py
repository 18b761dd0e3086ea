"""gluon_cifar.data.labels: trainLabels.csv read strictly; every label one safe folder name."""
import os

import pytest

from gluon_cifar import train as train_command
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.reorg import reorg_cifar10_data

from conftest import BIG_ID, checks_argv, label_rows, one_error_line, placed, refuse, relabel, write_labels


@pytest.mark.parametrize("label, reason", [
    ("../../../ESCAPED", "path separator"), ("/tmp/abs", "path separator"), ("big/cat", "path separator"),
    ("back\\slash", "path separator"), (".", "not a folder name"), ("..", "not a folder name"),
    ('"bell\x07"', "control character"), ('"new\nline"', "control character"),
    ("c" * 300, "longer than 255 bytes"), ("é" * 128, "longer than 255 bytes"),
    ("Airplane", "differs only in case")])
def test_a_label_that_is_not_one_safe_folder_name_is_refused_naming_its_row(capfd, root, label, reason):
    relabel(root, {5}, label)
    line = refuse(capfd, root)
    row = [i for i, _ in label_rows_raw(root)].index("5") + 2
    assert f"line {row}" in line and reason in line
    assert not any("ESCAPED" in name for _, dirs, files in os.walk(os.path.dirname(os.path.dirname(root)))
                   for name in dirs + files)


def label_rows_raw(root):
    with open(os.path.join(root, "trainLabels.csv"), encoding="utf-8") as f:
        return [tuple(line.split(",", 1)) for line in f.read().split("\n")[1:] if line and line[0].isdigit()]


def test_a_nul_byte_in_a_label_is_refused(capfd, root):
    with open(os.path.join(root, "trainLabels.csv"), "ab") as f:
        f.write(b"31,c\x00t\n")
    refuse(capfd, root)


def test_a_5_mb_label_gives_a_short_line_naming_the_row(capfd, root):
    relabel(root, {3}, "x" * 5_000_000)
    line = refuse(capfd, root)
    assert len(line) < 500 and "line " in line and "longer than 255 bytes" in line


def test_a_single_class_is_refused(capfd, root):
    write_labels(root, [(i, "cat") for i, _ in label_rows(root)])
    assert "at least two classes" in refuse(capfd, root)


def test_ids_with_leading_zeros_are_the_same_image(capfd, root):
    rows = label_rows(root)
    write_labels(root, [("007" if i == "7" else i, label) for i, label in rows])
    assert read_csv_labels(os.path.join(root, "trainLabels.csv")) == dict(rows)
    write_labels(root, rows + [("01", rows[0][1])])
    assert "appears more than once" in refuse(capfd, root)


def test_swapping_two_labels_rebuilds(root):
    reorg = reorg_cifar10_data(root, 0.25)
    rows = dict(label_rows(root))
    a = next(i for i, label in rows.items() if label == "airplane")
    b = next(i for i, label in rows.items() if label == "bird")
    rows[a], rows[b] = rows[b], rows[a]
    write_labels(root, rows.items())
    reorg_cifar10_data(root, 0.25)
    assert placed(reorg)[f"{a}.png"] == "bird" and placed(reorg)[f"{b}.png"] == "airplane"


def test_a_label_id_beyond_int64_is_refused(kaggle_dir, capsys):
    with open(os.path.join(kaggle_dir, "trainLabels.csv"), "a") as f:
        f.write(f"{BIG_ID},bird\n")
    one_error_line(capsys, lambda: train_command.main(checks_argv(kaggle_dir)), "trainLabels.csv, line 32: id", BIG_ID,
                   "is larger than")
