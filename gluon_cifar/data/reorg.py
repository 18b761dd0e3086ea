"""The chapter's folder reorganisation: Kaggle layout in, `train_valid_test/{train,valid,train_valid,
test/unknown}` class folders out (hard links, every image checked once), reused while the data stays the
same and rebuilt, through gluon_cifar.fs, when it changes.

Where it may go: gluon_cifar.data.locations; what it is built from (its stamp and fingerprint):
gluon_cifar.data.fingerprint; checking and linking the images: gluon_cifar.data.placement.
"""
import collections
import contextlib
import logging
import math
import os

from gluon_cifar import fs
from gluon_cifar.data.fingerprint import (COMPLETE_MARKER, source_files, source_stamp, training_data_change,
                                          with_identities)
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.locations import REORG_DIRNAME, check_data_folder, check_output_location, check_reorg_target
from gluon_cifar.data.placement import place_images
from gluon_cifar.data.sources import unpack_archives
from gluon_cifar.errors import InputError, shorten
from gluon_cifar.fs import read_json, write_json

log = logging.getLogger("gluon_cifar")


def _lock_file(reorg_dir, what):
    """The lock file `.<reorg name>.<what>` beside `reorg_dir`, created if missing."""
    parent, name = os.path.split(os.path.abspath(reorg_dir))
    return fs.FileLock(os.path.join(parent, f".{name}.{what}"),
                       cannot=f"cannot write to {parent}, where the reorganised folders go: pass --reorg-dir with "
                              "a folder you can write to")


def reorg_train_valid(train_files, labels, valid_ratio, reorg_dir, manifest=None):
    """Split the training images (`source_files` of `train/`) into class folders under `reorg_dir`, as the
    chapter does.

    n is the image count of the rarest class; the first max(1, floor(n * valid_ratio)) images of each
    class (in numeric id order, so the split never depends on listing order) go to `valid/`, the rest
    to `train/`, and every image to `train_valid/` (`place_images`). Returns `train_files` with their
    identities. Each file placed is recorded in `manifest` (default: `reorg_dir`'s).
    """
    manifest = manifest or fs.Manifest(reorg_dir)
    if not 0 < valid_ratio < 1:
        raise InputError(f"valid ratio must be between 0 and 1 (exclusive), got {valid_ratio}")
    unlabelled = [f.path for f in train_files if str(f.id) not in labels]
    if unlabelled:
        raise InputError(f"{unlabelled[0]}: image has no row in trainLabels.csv")
    image_ids = {str(f.id) for f in train_files}
    missing = [image_id for image_id in labels if image_id not in image_ids]
    if missing:
        raise InputError(f"trainLabels.csv: id {missing[0]} has no image {missing[0]}.png in train/")
    class_sizes = collections.Counter(labels.values())
    rarest, n = class_sizes.most_common()[-1]
    n_valid_per_label = max(1, math.floor(n * valid_ratio))
    if n - n_valid_per_label < 1:
        raise InputError(f"class {shorten(repr(rarest), 80)} has only {n} image(s): too few to hold out "
                         f"{n_valid_per_label} for validation and still train on it")
    folders = {(split, label): os.path.join(reorg_dir, split, label)
               for label in class_sizes for split in ("train_valid", "valid", "train")}  # each gets images
    for folder in folders.values():
        fs.make_dirs(folder, manifest)
    label_count, where = collections.Counter(), []
    for source in train_files:
        label = labels[str(source.id)]
        split = "valid" if label_count[label] < n_valid_per_label else "train"
        label_count[label] += 1
        where.append((folders["train_valid", label], folders[split, label]))
    return place_images(train_files, where, "train", manifest)


def reorg_test(test_files, reorg_dir, manifest=None):
    """Place every test image in `reorg_dir/test/unknown`, the one-class folder ImageFolderDataset needs;
    return `test_files` with their identities."""
    manifest = manifest or fs.Manifest(reorg_dir)
    folder = os.path.join(reorg_dir, "test", "unknown")
    fs.make_dirs(folder, manifest)
    return place_images(test_files, [(folder,)] * len(test_files), "test", manifest)


def _build(train, test, labels, valid_ratio, reorg_dir):
    """Build the reorganisation in a staging folder beside `reorg_dir` and publish it by renaming.

    The completion marker, the `source_stamp` of the images as the build read them, is written last, so a
    folder without it is never taken for a finished one.
    Every file placed is recorded in the folder's manifest (gluon_cifar.fs), which alone decides what a
    rebuild may remove: checked before any work, so a file of the user's stops the rebuild untouched.
    """
    purpose = f"{reorg_dir} is rebuilt"
    if os.path.isdir(reorg_dir) and os.listdir(reorg_dir):
        fs.check_owned([reorg_dir], fs.Manifest(reorg_dir), purpose)
    staging = fs.staging_dir(reorg_dir)
    manifest = fs.Manifest(staging)
    try:
        with manifest:
            train = reorg_train_valid(train, labels, valid_ratio, staging, manifest)
            test = reorg_test(test, staging, manifest)
        write_json(os.path.join(staging, COMPLETE_MARKER), source_stamp(labels, valid_ratio, train, test))
    except BaseException:
        fs.remove_owned([staging], manifest, "the staging folder of a failed build")
        raise
    fs.replace_folder(staging, reorg_dir, purpose)


def reorg_cifar10_data(data_dir, valid_ratio, reorg_dir=None):
    """Build `train_valid_test/` from a Kaggle-layout folder; return its path.

    Exact reuse: a complete reorganisation is reused only when it was made from the same CSV content,
    the same source files and the same ratio, and is rebuilt otherwise. One run at a time builds
    (an exclusive lock beside the folder); the others wait, then reuse it. Sources are only read.
    """
    with reorganised(data_dir, valid_ratio, reorg_dir) as folder:
        return folder


@contextlib.contextmanager
def reorganised(data_dir, valid_ratio, reorg_dir=None, resumes=None):
    """`reorg_cifar10_data`, keeping the reorganisation in use until the block ends: while a run trains on
    it, another run that would rebuild it (other labels, images or ratio) is refused instead of changing
    the files under the first one.

    `resumes`, the `data_fingerprint` a resumed run recorded, refuses other training data (before any
    rebuild), naming what changed; other test images are this run's to predict."""
    check_data_folder(data_dir)
    reorg_dir = reorg_dir or os.path.join(data_dir, REORG_DIRNAME)
    check_output_location(data_dir, reorg_dir, "the reorganisation folder")
    check_reorg_target(reorg_dir)
    in_use = _lock_file(reorg_dir, "in-use")  # shared by the runs using it; exclusive to rebuild it
    try:
        build = _lock_file(reorg_dir, "lock")
        build.take(waiting=f"waiting for another run's reorganisation of {reorg_dir}")
        try:
            unpack_archives(data_dir)
            csv_path = os.path.join(data_dir, "trainLabels.csv")
            labels = read_csv_labels(csv_path)
            train, test = (source_files(data_dir, split, reorg_dir) for split in ("train", "test"))
            if not test:
                raise InputError(f"{os.path.join(data_dir, 'test')}: no test images")
            built, stamp = read_json(os.path.join(reorg_dir, COMPLETE_MARKER)), None
            if built is not None or resumes:  # (a first build reads each image once, as it places it)
                stamp = source_stamp(labels, valid_ratio, with_identities(train), with_identities(test))
            change = resumes and training_data_change(resumes, stamp, reorg_dir)
            if change:
                raise InputError(f"--resume continues the run on the data it started on, but {change} (in "
                                 f"{data_dir}): restore that data, or start a new run (--overwrite or another "
                                 "--output-dir)")
            if stamp is None or built != stamp:
                check_reorg_target(reorg_dir)  # again, under the lock
                in_use.take(busy=f"{reorg_dir} is in use by a run training on it, and was built from other "
                                 "labels, images or --valid-ratio: rebuilding it now would change that run's "
                                 "data; wait for it to end, or give this run its own --reorg-dir")
                log.info("reorganising %d training and %d test images into class folders in %s (hard links; "
                         "every image checked once to catch damaged files; done once, reused by later runs)",
                         len(train), len(test), reorg_dir)
                _build(train, test, labels, valid_ratio, reorg_dir)
            in_use.take(shared=True)  # under the build lock: no rebuild can come in between
        finally:
            build.close()
        yield reorg_dir
    finally:
        in_use.close()
