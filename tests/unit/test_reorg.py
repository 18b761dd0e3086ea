"""gluon_cifar.data.reorg and the modules it is built from (locations, fingerprint, parallel, placement): the
chapter's split, hard links, exact reuse or rebuild, locks, where folders may go, the pooled check."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as onp
import pytest
from PIL import Image

from gluon_cifar import fs
from gluon_cifar.data.fingerprint import COMPLETE_MARKER, source_files
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.parallel import POOL_MIN_IMAGES
from gluon_cifar.data.placement import place_images
from gluon_cifar.data.reorg import reorg_cifar10_data, reorganised
from gluon_cifar.errors import InputError
from gluon_cifar.fs import OWNER_MARKER

from clitools import assert_one_error_line, command, run_with_file_size_limit, snapshot, truncate, wait_for
from conftest import (SIZES, checks_argv, class_files, everything, make_kaggle_dir, placed, refuse, relabel, save_as,
                      tree_snapshot, write_png)


def test_split_counts_follow_the_rarest_class(kaggle_dir):
    reorg = reorg_cifar10_data(kaggle_dir, valid_ratio=0.3)
    # rarest class has 8 images: max(1, floor(8 * 0.3)) = 2 validation images per class
    valid, train, train_valid = (class_files(reorg, s) for s in ("valid", "train", "train_valid"))
    assert {c: len(v) for c, v in valid.items()} == {c: 2 for c in SIZES}
    assert {c: len(v) for c, v in train.items()} == {c: n - 2 for c, n in SIZES.items()}
    assert {c: len(v) for c, v in train_valid.items()} == SIZES
    for c in SIZES:
        assert set(valid[c]) | set(train[c]) == set(train_valid[c])
        assert not set(valid[c]) & set(train[c])
    assert sorted(os.listdir(os.path.join(reorg, "test", "unknown"))) == sorted(f"{i}.png" for i in range(1, 8))


def test_labels_match_csv_and_valid_takes_lowest_ids(kaggle_dir):
    """Numeric id order, not directory listing order, decides which images are held out."""
    labels = read_csv_labels(os.path.join(kaggle_dir, "trainLabels.csv"))
    reorg = reorg_cifar10_data(kaggle_dir, valid_ratio=0.3)
    for split in ("train", "valid"):
        for c, files in class_files(reorg, split).items():
            assert all(labels[f[:-4]] == c for f in files)
    for c, files in class_files(reorg, "valid").items():
        ids_of_class = sorted(int(i) for i, label in labels.items() if label == c)
        assert sorted(int(f[:-4]) for f in files) == ids_of_class[:2]


def test_at_least_one_validation_image_per_class(kaggle_dir):
    reorg = reorg_cifar10_data(kaggle_dir, valid_ratio=0.01)
    assert all(len(v) == 1 for v in class_files(reorg, "valid").values())


def test_reorg_is_idempotent_and_leaves_sources_untouched(kaggle_dir):
    before = tree_snapshot(kaggle_dir)
    reorg = reorg_cifar10_data(kaggle_dir, 0.3)
    first = tree_snapshot(reorg)
    marker_mtime = os.stat(os.path.join(reorg, ".complete.json")).st_mtime_ns
    assert reorg_cifar10_data(kaggle_dir, 0.3) == reorg
    assert tree_snapshot(reorg) == first
    assert os.stat(os.path.join(reorg, ".complete.json")).st_mtime_ns == marker_mtime  # not redone
    after = {k: v for k, v in tree_snapshot(kaggle_dir).items() if not k.lstrip(".").startswith("train_valid_test")}
    assert after == before


def test_files_are_hard_links_of_the_sources(kaggle_dir):
    reorg = reorg_cifar10_data(kaggle_dir, 0.3)
    some = os.path.join(reorg, "train_valid", "bird", os.listdir(os.path.join(reorg, "train_valid", "bird"))[0])
    assert os.path.samefile(some, os.path.join(kaggle_dir, "train", os.path.basename(some)))


def test_a_new_ratio_replaces_the_old_split(kaggle_dir):
    reorg_cifar10_data(kaggle_dir, 0.3)
    reorg = reorg_cifar10_data(kaggle_dir, 0.5)
    assert all(len(v) == 4 for v in class_files(reorg, "valid").values())
    assert {c: len(v) for c, v in class_files(reorg, "train").items()} == {c: n - 4 for c, n in SIZES.items()}


def test_reorg_into_a_separate_folder(kaggle_dir, tmp_path):
    reorg = reorg_cifar10_data(kaggle_dir, 0.3, reorg_dir=str(tmp_path / "elsewhere"))
    assert reorg == str(tmp_path / "elsewhere")
    assert not os.path.exists(os.path.join(kaggle_dir, "train_valid_test"))


def test_outputs_get_ordinary_file_permissions(tmp_path):
    from gluon_cifar.fs import write_json
    old = os.umask(0o022)
    try:
        write_json(str(tmp_path / "a.json"), {"x": 1})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644


def test_reorg_killed_half_way_completes_when_run_again(tmp_path):
    data = make_kaggle_dir(tmp_path / "k", 700, num_test=3)
    sources = snapshot(data)
    reorg = os.path.join(data, "train_valid_test")
    script = f"from gluon_cifar.data.reorg import reorg_cifar10_data; reorg_cifar10_data({data!r}, 0.1)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    # The first class folder appears with the first image; 2,100 images remain to be placed.
    wait_for(os.path.join(data, ".train_valid_test.lock"), proc)  # created before the staging folder
    while not (staging := [n for n in os.listdir(data) if n.startswith(f".train_valid_test.{proc.pid}.")]):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)  # polling for the folder to appear, as wait_for does
    wait_for(os.path.join(data, staging[0], "train_valid"), proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not os.path.exists(reorg), "a partial reorganisation must never take the final name"

    assert reorg_cifar10_data(data, 0.1) == reorg
    assert_complete_reorg(data, reorg, per_class=700, valid_per_class=70)
    assert snapshot(data) == sources


@pytest.mark.parametrize("damage", ["a missing file", "a missing and a rewritten file"])
def test_reorg_after_a_killed_build_removes_its_staging_by_its_manifest(kaggle_dir, damage):
    """The staging folder a killed build (pid 99999999: no longer running) left goes, file by file as its
    manifest lists them; a file no manifest lists (rewritten since) keeps all of it where it is, with a
    warning. Either way the new build is complete."""
    sources = snapshot(kaggle_dir)
    reorg = reorg_cifar10_data(kaggle_dir, 0.2)
    partial = os.path.join(kaggle_dir, ".train_valid_test.99999999.abcdefgh.tmp")
    os.remove(os.path.join(reorg, ".complete.json"))
    os.rename(reorg, partial)  # as an interrupted run leaves it (its manifest names it: a rename keeps the inode)
    class_dir = os.path.join(partial, "train_valid", "airplane")
    half, missing = sorted(os.listdir(class_dir))[:2]
    os.remove(os.path.join(class_dir, missing))
    if "rewritten" in damage:
        data = open(os.path.join(class_dir, half), "rb").read()
        os.remove(os.path.join(class_dir, half))  # (not truncated in place: it is a hard link to the source)
        with open(os.path.join(class_dir, half), "wb") as f:
            f.write(data[:len(data) // 2])

    assert reorg_cifar10_data(kaggle_dir, 0.2) == reorg
    assert os.path.exists(partial) == ("rewritten" in damage)
    if "rewritten" in damage:  # checked first, then removed: nothing of it is removed
        assert half in os.listdir(class_dir) and os.path.isfile(os.path.join(partial, fs.MANIFEST))
    assert_complete_reorg(kaggle_dir, reorg, per_class=None, valid_per_class=1)
    assert snapshot(kaggle_dir) == sources


def assert_complete_reorg(data_dir, reorg, per_class, valid_per_class):
    """Every training image once in train_valid, as a link to its source; valid/train split them."""
    labels = dict(line.strip().split(",") for line in open(os.path.join(data_dir, "trainLabels.csv"))
                  if not line.startswith("id,"))
    placed = {}
    for label in os.listdir(os.path.join(reorg, "train_valid")):
        names = os.listdir(os.path.join(reorg, "train_valid", label))
        assert per_class is None or len(names) == per_class
        assert len(os.listdir(os.path.join(reorg, "valid", label))) == valid_per_class
        for name in names:
            placed[name[:-4]] = label
            assert os.path.samefile(os.path.join(reorg, "train_valid", label, name),
                                    os.path.join(data_dir, "train", name))
        assert sorted(os.listdir(os.path.join(reorg, "valid", label)) +
                      os.listdir(os.path.join(reorg, "train", label))) == sorted(names)
    assert placed == labels
    assert sorted(os.listdir(os.path.join(reorg, "test", "unknown"))) == sorted(
        os.listdir(os.path.join(data_dir, "test")))


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


KILLED_BUILD = """
import os, signal, sys
from gluon_cifar import fs
staging = fs.staging_dir(os.path.join(sys.argv[1], "train_valid_test"))
manifest = fs.Manifest(staging)
fs.make_dirs(os.path.join(staging, "train_valid", "bird"), manifest)
fs.link_files([(os.path.join(sys.argv[1], "test", "1.png"), os.path.join(staging, "train_valid", "bird", "1.png"))],
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


BAD_IMAGES = {"truncated": truncate,
              "a decompression bomb": lambda path: Image.new("1", (20000, 10000)).save(path),
              "a float TIFF": lambda path: save_as(path, "TIFF", onp.zeros((32, 32), onp.float32)),
              "a GIF": lambda path: save_as(path, "GIF", onp.zeros((32, 32, 3), onp.uint8))}


def place_all(root, reorg, processes):
    """Every training image of `root` placed in `reorg/all` by `processes` processes; the placed files."""
    os.makedirs(os.path.join(reorg, "all"))
    files = source_files(root, "train", reorg)
    placed = place_images(files, [(os.path.join(reorg, "all"),)] * len(files), "train", fs.Manifest(reorg), processes)
    assert [f.id for f in placed] == [f.id for f in files] and all(f.identity for f in placed)
    return [os.path.join(reorg, "all", name) for name in sorted(os.listdir(os.path.join(reorg, "all")), key=lambda
                                                                   name: int(name.split(".")[0]))]


@pytest.mark.parametrize("bad", BAD_IMAGES)
def test_workers_refuse_the_first_bad_image_in_id_order_in_one_line(root, bad):
    for image_id in (5, 3):  # a worker may meet 5 first: 3 is still the one named
        BAD_IMAGES[bad](os.path.join(root, "train", f"{image_id}.png"))
    with pytest.raises(InputError) as single:
        place_all(root, os.path.join(root, "one"), processes=1)
    with pytest.raises(InputError) as pooled:
        place_all(root, os.path.join(root, "two"), processes=2)
    assert str(pooled.value) == str(single.value)
    assert str(pooled.value).startswith(os.path.join(root, "train", "3.png") + ":") and "\n" not in str(pooled.value)


def test_workers_convert_and_resize_to_the_same_files_as_one_process(root, tmp_path):
    rng = onp.random.default_rng(4)
    for image_id, (size, mode) in enumerate([(32, "L"), (32, "RGBA"), (32, "P"), (64, "RGB"), (24, "LA")], 1):
        write_png(os.path.join(root, "train", f"{image_id}.png"), rng, size, mode)
    single = place_all(root, str(tmp_path / "one"), processes=1)
    pooled = place_all(root, str(tmp_path / "two"), processes=2)
    assert [os.path.basename(p) for p in pooled] == [os.path.basename(p) for p in single] == [
        f"{i}.png" for i in range(1, 31)]
    sources = {os.stat(os.path.join(root, "train", f"{i}.png")).st_ino for i in range(1, 31)}
    resized = [i for i, path in enumerate(pooled) if os.stat(path).st_ino not in sources]
    assert resized == [3, 4]  # the 64 and 24 pixel images, as files of their own
    for one, two in zip(single, pooled):
        with open(one, "rb") as a, open(two, "rb") as b:
            assert a.read() == b.read()


def test_a_bad_image_found_by_a_worker_is_one_line_from_the_command(capfd, tiny_copy):
    """1000 training images: over POOL_MIN_IMAGES, so the command's check runs in worker processes."""
    assert len(os.listdir(os.path.join(tiny_copy, "train"))) >= POOL_MIN_IMAGES
    BAD_IMAGES["truncated"](os.path.join(tiny_copy, "train", "700.png"))
    line = refuse(capfd, tiny_copy)
    assert os.path.join("train", "700.png") in line and "cannot decode image" in line


@pytest.fixture
def other_file_system(tmp_path):
    """A new folder on a file system other than tmp_path's (/dev/shm, a tmpfs), where a hard link to a file
    in tmp_path fails for real (EXDEV); removed afterwards."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    import tempfile
    folder = tempfile.mkdtemp(dir="/dev/shm", prefix="gluon_cifar-test.")
    yield folder
    shutil.rmtree(folder)


def test_links_to_another_file_system_are_copies_the_manifest_owns(tmp_path, other_file_system):
    source, copy = tmp_path / "1.png", os.path.join(other_file_system, "1.png")
    source.write_bytes(b"an image")
    manifest = fs.Manifest(other_file_system)
    fs.link_files([(str(source), copy)], manifest)
    assert open(copy, "rb").read() == b"an image" and os.stat(copy).st_ino != source.stat().st_ino
    assert manifest.entries()["1.png"]["kind"] == "file" and manifest.owns(copy)


def test_a_reorganisation_that_cannot_link_or_copy_is_one_line(kaggle_dir, other_file_system):
    """Links across file systems fail, so the images are copied; where no file can grow past 1000 bytes (a
    PNG is about 3 kB; the manifest's first records, written before the links, more), the build fails as on
    a full disk: one line, and no half reorganisation left."""
    reorg = os.path.join(other_file_system, "reorg")
    before = snapshot(kaggle_dir, skip=("train_valid_test", "out"))
    result = run_with_file_size_limit(1000, "gluon_cifar.train", *checks_argv(kaggle_dir, "--reorg-dir", reorg))
    assert_one_error_line(result, f"cannot write {other_file_system}", "File too large", "disk full?")
    assert [name for name in os.listdir(other_file_system) if not name.endswith((".lock", ".in-use"))] == []
    assert snapshot(kaggle_dir, skip=("train_valid_test", "out")) == before  # the data (out: the run's own)
