"""The data stage is trustworthy with the user's files (issue 11): nothing deleted, escaped, stale or
half-done, whatever the labels, the images or the folders given.

Refusals run the real training command in-process (`main([...])`): one `error:` line, exit 2, and every
file of the user's unchanged down to its mtime. Only the race needs real processes.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import types

import numpy as onp
import pytest
from PIL import Image

from clitools import assert_one_error_line, command, truncate, wait_for
from conftest import make_kaggle_dir, write_png
from gluon_cifar import fs
from gluon_cifar.errors import InputError
from gluon_cifar.train import main
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.reorg import COMPLETE_MARKER, POOL_MIN_IMAGES, checked_sources, reorg_cifar10_data, reorganised, source_files
from gluon_cifar.data.sources import unpacking_folder
from gluon_cifar.fs import OWNER_MARKER

SIZES = {"airplane": 10, "automobile": 12, "bird": 8}


@pytest.fixture
def root(tmp_path):
    """A Kaggle-layout folder with classes of 10, 12 and 8 images and 7 test images, alone in tmp_path/k."""
    return make_kaggle_dir(tmp_path / "k", SIZES)


def everything(folder):
    """{relative path: (sha1, mtime_ns), or the target of a link} of every file under `folder`, derived ones
    included: what a refusal must leave exactly as it was."""
    files = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            if os.path.islink(path):
                files[os.path.relpath(path, folder)] = os.readlink(path)
            elif name in names:
                with open(path, "rb") as f:
                    files[os.path.relpath(path, folder)] = (hashlib.sha1(f.read()).hexdigest(),
                                                            os.stat(path).st_mtime_ns)
    return files


def refuse(capfd, root, *extra, output=None):
    """Run the training command in-process on `root`; assert it refuses with one line (even at the file
    descriptor level, where C libraries write) and changes no file; return that line."""
    output = output or os.path.join(os.path.dirname(root), "out")
    argv = ["--data-dir", root, "--epochs", "1", "--batch-size", "2", "--valid-ratio", "0.25",
            "--devices", "cpu", "--output-dir", str(output), *map(str, extra)]
    parent = os.path.dirname(root)
    before = everything(parent)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    result = types.SimpleNamespace(returncode=stop.value.code, stderr=capfd.readouterr().err)
    line = assert_one_error_line(result)
    after = everything(parent)
    assert {path: after.get(path) for path in before} == before, "a file of the user's changed"
    return line


def write_labels(root, rows):
    with open(os.path.join(root, "trainLabels.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("id,label\n" + "".join(f"{image_id},{label}\n" for image_id, label in rows))


def label_rows(root):
    return list(read_csv_labels(os.path.join(root, "trainLabels.csv")).items())


def relabel(root, ids, label):
    """Give the images `ids` the (raw CSV text) `label`."""
    write_labels(root, [(i, label if int(i) in ids else old) for i, old in label_rows(root)])


def placed(reorg, split="train_valid"):
    """{image file name: class folder} of a reorganised split."""
    return {name: label for label in os.listdir(os.path.join(reorg, split))
            for name in os.listdir(os.path.join(reorg, split, label))}


# 1. The reorganisation and output folders never reach the data

@pytest.mark.parametrize("target", ["{root}", "{root}/train", "{root}/test", "{parent}", "/",
                                    "{root}/train/rt", "{root}/test/deeper/rt"])
@pytest.mark.parametrize("flag", ["--reorg-dir", "--output-dir"])
def test_the_data_folder_its_splits_and_their_ancestors_are_never_a_target(capfd, root, flag, target):
    target = target.format(root=root, parent=os.path.dirname(root))
    line = refuse(capfd, root, flag, target)
    assert flag in line and target in line
    assert not os.path.exists(os.path.join(root, "train", "rt"))
    assert not os.path.exists(os.path.join(root, "train_valid_test"))  # refused before any work


def test_a_link_to_the_data_folder_is_seen_through(capfd, root, tmp_path):
    os.symlink(root, tmp_path / "innocent")
    assert "is or holds the data folder" in refuse(capfd, root, "--reorg-dir", tmp_path / "innocent")


def test_a_reorg_folder_holding_the_users_files_is_refused(capfd, root, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years of work")
    line = refuse(capfd, root, "--reorg-dir", mine)
    assert "was not made by gluon_cifar" in line
    assert (mine / "thesis.txt").read_text() == "four years of work"


@pytest.mark.parametrize("what", ["a file", "the output folder", "a folder holding the output folder"])
def test_reorg_folder_that_is_a_file_or_overlaps_the_outputs_is_refused(capfd, root, tmp_path, what):
    out = tmp_path / "out"
    reorg = {"a file": root + "/trainLabels.csv", "the output folder": out,
             "a folder holding the output folder": tmp_path}[what]
    refuse(capfd, root, "--reorg-dir", reorg, output=out)


def test_an_empty_folder_of_the_users_is_filled_then_reused(root, tmp_path):
    (tmp_path / "empty").mkdir()
    reorg = reorg_cifar10_data(root, 0.25, str(tmp_path / "empty"))
    assert len(placed(reorg)) == 30
    assert os.path.isfile(os.path.join(reorg, OWNER_MARKER))
    assert reorg_cifar10_data(root, 0.25, reorg) == reorg


def test_remove_ours_removes_nothing_the_package_did_not_write(root, tmp_path):
    """A rebuild replaces the old reorganisation; a file the user put in it stops the rebuild, and a
    folder without the package's marker is never removed, whatever is in it."""
    reorg = reorg_cifar10_data(root, 0.25)
    notes = os.path.join(reorg, "train", "bird", "notes.txt")
    with open(notes, "w") as f:
        f.write("mine")
    relabel(root, {1, 2}, "automobile")  # the reorganisation is stale: it must be rebuilt
    with pytest.raises(InputError, match="did not write this file"):
        reorg_cifar10_data(root, 0.25)
    assert open(notes).read() == "mine"
    assert os.path.isfile(os.path.join(reorg, COMPLETE_MARKER))  # the old one, untouched

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    write_png(foreign / "train" / "1.png", onp.random.default_rng(0))  # looks like ours, in no manifest
    with pytest.raises(InputError, match="did not write this"):
        fs.remove_owned([str(foreign)], fs.Manifest(str(foreign)), "a test")
    assert (foreign / "train" / "1.png").exists()


@pytest.mark.parametrize("name", [".train_valid_test.partial", ".train_valid_test.99999999.abcdefgh.tmp"])
def test_a_staging_folder_name_taken_by_the_user_is_left_alone(root, name):
    """Even a name of the staging convention, of a writer that no longer runs: no manifest names it ours."""
    squatter = os.path.join(root, name)
    os.makedirs(squatter)
    with open(os.path.join(squatter, "draft.txt"), "w") as f:
        f.write("mine")
    assert len(placed(reorg_cifar10_data(root, 0.25))) == 30
    assert os.listdir(squatter) == ["draft.txt"]


# 2. Labels are data, not paths

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


# 3. Exact reuse

def test_swapping_two_labels_rebuilds(root):
    reorg = reorg_cifar10_data(root, 0.25)
    rows = dict(label_rows(root))
    a = next(i for i, label in rows.items() if label == "airplane")
    b = next(i for i, label in rows.items() if label == "bird")
    rows[a], rows[b] = rows[b], rows[a]
    write_labels(root, rows.items())
    reorg_cifar10_data(root, 0.25)
    assert placed(reorg)[f"{a}.png"] == "bird" and placed(reorg)[f"{b}.png"] == "airplane"


@pytest.mark.parametrize("how", ["rewritten", "replaced, old mtime kept"])
def test_a_replaced_image_rebuilds(root, how):
    reorg = reorg_cifar10_data(root, 0.25)
    source = os.path.join(root, "train", "1.png")
    old = os.stat(source)
    if how == "rewritten":
        write_png(source, onp.random.default_rng(99))
    else:  # another file moved over it, then its mtime set back: only the inode tells
        other = os.path.join(root, "other.png")
        shutil.copyfile(os.path.join(root, "train", "2.png"), other)
        os.replace(other, source)
        os.utime(source, ns=(old.st_atime_ns, old.st_mtime_ns))
    reorg_cifar10_data(root, 0.25)
    label = placed(reorg)["1.png"]
    assert os.path.samefile(os.path.join(reorg, "train_valid", label, "1.png"), source)


def test_an_unchanged_folder_is_reused_without_rebuilding(root):
    reorg = reorg_cifar10_data(root, 0.25)
    marker = os.stat(os.path.join(reorg, COMPLETE_MARKER))
    reorg_cifar10_data(root, 0.25)
    assert os.stat(os.path.join(reorg, COMPLETE_MARKER)).st_mtime_ns == marker.st_mtime_ns


# 4. Races and killed runs

def test_two_runs_started_together_both_see_the_complete_split(tmp_path):
    """Two real training commands on one new data folder, started at once: the lock makes one wait."""
    root = make_kaggle_dir(tmp_path / "k", 100, num_test=3)  # 300 images: long enough to overlap
    procs = [subprocess.Popen(command("train", "--data-dir", root, "--batch-size", "1000", "--devices", "cpu",
                                      "--output-dir", tmp_path / f"out{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 2 and "--batch-size 1000 is larger than" in err, err  # stops after the reorg
    reorg = os.path.join(root, "train_valid_test")
    assert len(placed(reorg)) == 300 and len(placed(reorg, "valid")) == 30
    assert len(os.listdir(os.path.join(reorg, "test", "unknown"))) == 3
    assert sorted(n for n in os.listdir(root) if "train_valid_test" in n) == [".train_valid_test.in-use",
                                                                           ".train_valid_test.lock", "train_valid_test"]


def test_a_split_in_use_is_not_rebuilt_under_the_run_using_it(capfd, root):
    """Run A trains on the split; run B, after the labels changed, would rebuild it under A: B is refused
    with one line and A's files stay as they are; once A is done, B rebuilds it."""
    with reorganised(root, 0.25) as reorg:
        before = placed(reorg)
        relabel(root, {1, 2}, "bird")
        line = refuse(capfd, root)
        assert "is in use by a run training on it" in line and "--reorg-dir" in line
        assert placed(reorg) == before
        assert reorg_cifar10_data(root, 0.25, reorg_dir=os.path.join(root, "mine")) != reorg  # elsewhere
    assert reorg_cifar10_data(root, 0.25) == reorg and placed(reorg) != before


@pytest.mark.slow
def test_a_training_command_keeps_its_split_in_use_until_it_ends(capfd, root, tmp_path_factory):
    out = tmp_path_factory.mktemp("running") / "out"
    training = subprocess.Popen(command("train", "--data-dir", root, "--epochs", "500", "--batch-size", "2",
                                        "--valid-ratio", "0.25", "--devices", "cpu", "--output-dir", out),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / "checkpoint" / "epoch-0001", training)
        assert "is in use by a run training on it" in refuse(capfd, root, "--valid-ratio", "0.5")
    finally:
        training.terminate()
        _, err = training.communicate(timeout=600)
    assert training.returncode == 143 and err.startswith("terminated: stopped"), err
    reorg = reorg_cifar10_data(root, 0.5)  # the run has ended: rebuilt
    assert len(placed(reorg, "valid")) == 3 * 4


KILLED_BUILD = """
import os, signal, sys
from gluon_cifar import fs
staging = fs.staging_dir(os.path.join(sys.argv[1], "train_valid_test"))
manifest = fs.Manifest(staging)
fs.make_dirs(os.path.join(staging, "train_valid", "bird"), manifest)
fs.link_or_copy(os.path.join(sys.argv[1], "test", "1.png"), os.path.join(staging, "train_valid", "bird", "1.png"),
                manifest)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_stale_staging_folder_of_a_killed_run_is_cleaned(root):
    """What a run killed mid-build leaves, made by the package's own calls in a process that then died."""
    subprocess.run([sys.executable, "-c", KILLED_BUILD, root])
    assert len([n for n in os.listdir(root) if n.startswith(".train_valid_test.")]) == 1
    reorg = reorg_cifar10_data(root, 0.25)
    assert len(placed(reorg)) == 30
    assert sorted(n for n in os.listdir(root) if "train_valid_test" in n) == [".train_valid_test.in-use",
                                                                           ".train_valid_test.lock", "train_valid_test"]


def test_a_failed_build_leaves_no_staging_and_keeps_the_previous_split(root):
    reorg = reorg_cifar10_data(root, 0.25)
    before = everything(reorg)
    relabel(root, {1}, "bird")
    os.remove(os.path.join(root, "test", "3.png"))  # not written in place: it is hard-linked in the split
    with open(os.path.join(root, "test", "3.png"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(InputError, match="cannot decode"):
        reorg_cifar10_data(root, 0.25)
    assert everything(reorg) == before
    assert sorted(n for n in os.listdir(root) if "train_valid_test" in n) == [".train_valid_test.in-use",
                                                                           ".train_valid_test.lock", "train_valid_test"]


# 5. Validation sees what training sees

def save_as(path, fmt, pixels):
    Image.fromarray(pixels).save(path, format=fmt)


@pytest.mark.parametrize("fmt, split", [("TIFF", "train"), ("GIF", "test"), ("WEBP", "train")])
def test_an_image_mxnet_cannot_decode_is_refused_even_if_pil_can(capfd, root, fmt, split):
    rng = onp.random.default_rng(1)
    pixels = rng.random((32, 32)).astype(onp.float32) if fmt == "TIFF" else \
        rng.integers(0, 256, (32, 32, 3), dtype=onp.uint8)
    save_as(os.path.join(root, split, "1.png"), fmt, pixels)
    line = refuse(capfd, root)
    assert os.path.join(split, "1.png") in line and "MXNet" in line


def test_a_link_inside_the_data_folder_is_placed_as_the_file_it_names(root):
    os.makedirs(os.path.join(root, "extra"))
    shutil.move(os.path.join(root, "train", "1.png"), os.path.join(root, "extra", "1.png"))
    os.symlink(os.path.join("..", "extra", "1.png"), os.path.join(root, "train", "1.png"))
    reorg = reorg_cifar10_data(root, 0.25)
    reorganised = os.path.join(reorg, "train_valid", placed(reorg)["1.png"], "1.png")
    assert not os.path.islink(reorganised)
    assert os.path.samefile(reorganised, os.path.join(root, "extra", "1.png"))


@pytest.mark.parametrize("target, message", [("../../elsewhere.png", "outside the data folder"),
                                             ("../missing.png", "broken symbolic link"),
                                             ("1.png", "broken symbolic link"),  # a loop
                                             ("../train_valid_test/x.png", "outside the data folder")])
def test_a_link_that_does_not_name_a_file_of_the_data_folder_is_refused(capfd, root, target, message):
    write_png(os.path.join(os.path.dirname(root), "elsewhere.png"), onp.random.default_rng(2))
    if "train_valid_test" in target:  # a link into the reorganisation, which a rebuild replaces
        reorg_cifar10_data(root, 0.25)
        shutil.copyfile(os.path.join(root, "test", "1.png"), os.path.join(root, "train_valid_test", "x.png"))
    os.remove(os.path.join(root, "train", "1.png"))
    os.symlink(target, os.path.join(root, "train", "1.png"))
    assert message in refuse(capfd, root)


# 6. Input edge cases

@pytest.mark.parametrize("size", [(20000, 10000), (10000, 10000)])
def test_a_decompression_bomb_is_refused_before_decoding(capfd, root, size):
    Image.new("1", size).save(os.path.join(root, "test", "2.png"))  # a few kB on disk
    line = refuse(capfd, root)
    assert os.path.join("test", "2.png") in line and "image too large" in line


@pytest.mark.parametrize("name", ["².png", "١.png", "1.png.png", " 1.png"])
def test_only_ascii_digits_are_ids(capfd, root, name):
    os.rename(os.path.join(root, "test", "1.png"), os.path.join(root, "test", name))
    assert name in refuse(capfd, root)


@pytest.mark.parametrize("split, first, second", [("test", "1.png", "1.PNG"), ("test", "2.png", "002.png"),
                                                  ("train", "2.png", "002.png"), ("train", "3.png", "3.jpg")])
def test_two_files_of_one_id_are_ambiguous(capfd, root, split, first, second):
    shutil.copyfile(os.path.join(root, split, first), os.path.join(root, split, second))
    assert "ambiguous" in refuse(capfd, root)


@pytest.fixture
def read_only_data(tmp_path):
    """A Kaggle-layout folder on a read-only mount (for root, whom permissions do not stop)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        make_kaggle_dir(folder / "k", SIZES)
        for path in (folder / "k", folder / "k" / "train", folder / "k" / "test"):
            path.chmod(0o555)
        yield str(folder / "k")
        for path in (folder / "k", folder / "k" / "train", folder / "k" / "test"):
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("running as root without the right to mount: cannot make a folder root may not write")
    try:
        make_kaggle_dir(folder / "k", SIZES)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield str(folder / "k")
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_data_folder_says_so_and_suggests_reorg_dir(capfd, read_only_data, tmp_path):
    line = refuse(capfd, read_only_data, output=tmp_path / "out")
    assert "cannot write to" in line and "--reorg-dir" in line
    reorg = reorg_cifar10_data(read_only_data, 0.25, str(tmp_path / "reorg"))
    assert len(placed(reorg)) == 30


def test_a_missing_data_folder_is_one_line(capfd, tmp_path):
    assert "data folder not found" in refuse(capfd, str(tmp_path / "nothing"))


@pytest.mark.parametrize("name", [".train.unpacking", ".train.99999999.abcdefgh.tmp"])
def test_an_unpacking_folder_of_the_users_is_not_removed(root, tmp_path, name):
    import py7zr
    download = tmp_path / "download"
    (download / name).mkdir(parents=True)
    (download / name / "draft.txt").write_text("mine")
    with py7zr.SevenZipFile(download / "train.7z", "w") as z:
        z.writeall(os.path.join(root, "train"), "train")
    shutil.copytree(os.path.join(root, "test"), download / "test")
    shutil.copyfile(os.path.join(root, "trainLabels.csv"), download / "trainLabels.csv")
    assert len(placed(reorg_cifar10_data(str(download), 0.25))) == 30  # unpacked in a staging folder of its own
    assert (download / name / "draft.txt").read_text() == "mine"


def test_an_unpacking_folder_is_the_package_s_from_start_to_end(tmp_path):
    """Renamed into place: the rest goes; the unpack failed: all of it goes."""
    with unpacking_folder(str(tmp_path / "x")) as folder:
        assert sorted(os.listdir(folder)) == sorted([fs.MANIFEST, OWNER_MARKER])
        os.makedirs(os.path.join(folder, "x", "deep"))
        (tmp_path / "elsewhere").write_bytes(b"unpacked")  # (a library's write, which the block records)
        os.link(tmp_path / "elsewhere", os.path.join(folder, "half.png"))
        fs.rename_into_place(os.path.join(folder, "x"), str(tmp_path / "x"))
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "x"]

    with pytest.raises(RuntimeError, match="unpack failed"):
        with unpacking_folder(str(tmp_path / "y")) as folder:
            with open(os.path.join(folder, "half.png"), "wb") as f:
                f.write(b"half")
            raise RuntimeError("unpack failed")
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "x"]


def test_a_truncated_png_is_named_even_where_the_process_made_pil_lenient(tmp_path, monkeypatch):
    """PIL's LOAD_TRUNCATED_IMAGES is process-wide: importing GluonCV sets it, and so does a common fix
    for "image file is truncated" in a user's notebook. The package's check stays strict and leaves it as set."""
    from PIL import Image, ImageFile
    from gluon_cifar.images import image_size
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "1.png"
    Image.fromarray(onp.zeros((32, 32, 3), onp.uint8) + 100).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(InputError, match="cannot decode image"):
        image_size(str(path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # left as the process set it


# 7. The check spread over worker processes finds what one process finds

BAD_IMAGES = {"truncated": truncate,
              "a decompression bomb": lambda path: Image.new("1", (20000, 10000)).save(path),
              "a float TIFF": lambda path: save_as(path, "TIFF", onp.zeros((32, 32), onp.float32)),
              "a GIF": lambda path: save_as(path, "GIF", onp.zeros((32, 32, 3), onp.uint8))}


@pytest.mark.parametrize("bad", BAD_IMAGES)
def test_workers_refuse_the_first_bad_image_in_id_order_in_one_line(root, bad):
    for image_id in (5, 3):  # a worker may meet 5 first: 3 is still the one named
        BAD_IMAGES[bad](os.path.join(root, "train", f"{image_id}.png"))
    files = source_files(root, "train", os.path.join(root, "r"))
    with pytest.raises(InputError) as single:
        checked_sources(files, os.path.join(root, "r"), "train", fs.Manifest(os.path.join(root, "r")), processes=1)
    with pytest.raises(InputError) as pooled:
        checked_sources(files, os.path.join(root, "r"), "train", fs.Manifest(os.path.join(root, "r")), processes=2)
    assert str(pooled.value) == str(single.value)
    assert str(pooled.value).startswith(os.path.join(root, "train", "3.png") + ":") and "\n" not in str(pooled.value)


def test_workers_convert_and_resize_to_the_same_files_as_one_process(root, tmp_path):
    rng = onp.random.default_rng(4)
    for image_id, (size, mode) in enumerate([(32, "L"), (32, "RGBA"), (32, "P"), (64, "RGB"), (24, "LA")], 1):
        write_png(os.path.join(root, "train", f"{image_id}.png"), rng, size, mode)
    files = source_files(root, "train", str(tmp_path / "one"))
    single = checked_sources(files, str(tmp_path / "one"), "train", fs.Manifest(str(tmp_path / "one")), processes=1)
    pooled = checked_sources(files, str(tmp_path / "two"), "train", fs.Manifest(str(tmp_path / "two")), processes=2)
    assert [name for name, _ in pooled] == [name for name, _ in single] == [f"{i}.png" for i in range(1, 31)]
    resized = [i for i, (_, path) in enumerate(pooled) if not path.startswith(os.path.join(root, "train"))]
    assert resized == [3, 4]  # the 64 and 24 pixel images, as files of their own
    for (_, one), (_, two) in zip(single, pooled):
        with open(one, "rb") as a, open(two, "rb") as b:
            assert a.read() == b.read()


def test_a_bad_image_found_by_a_worker_is_one_line_from_the_command(capfd, tiny_copy):
    """1000 training images: over POOL_MIN_IMAGES, so the command's check runs in worker processes."""
    assert len(os.listdir(os.path.join(tiny_copy, "train"))) >= POOL_MIN_IMAGES
    BAD_IMAGES["truncated"](os.path.join(tiny_copy, "train", "700.png"))
    line = refuse(capfd, tiny_copy)
    assert os.path.join("train", "700.png") in line and "cannot decode image" in line
