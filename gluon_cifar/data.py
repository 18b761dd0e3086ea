"""Data stage: Kaggle's labels, the chapter's folder reorganisation, its transforms and its loaders.

Kaggle layout in, `train_valid_test/{train,valid,train_valid,test/unknown}` class folders out,
read back with `ImageFolderDataset` + `transform_first` exactly as the chapter does.
"""
import collections
import contextlib
import errno
import hashlib
import logging
import math
import multiprocessing
import os
import random
import re
import unicodedata
import urllib.parse
import zipfile

import numpy as onp
import pandas as pd
from mxnet import gluon, image, np
from mxnet.gluon.data.vision import transforms
from PIL import Image

from . import fs
from .fs import OWNER_MARKER, RUN_MARKER, read_json, write_json
from .errors import InputError, shorten
from .fastdata import fast_loader
from .images import CIFAR10_MEAN, CIFAR10_STD, IMAGE_SHAPE, read_image, read_original

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
REORG_DIRNAME = "train_valid_test"
SPLITS = ("train", "valid", "train_valid")  # the labelled splits; test/unknown holds the test images
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "gluon_cifar")
MAX_NAME_BYTES = 255  # a file name's limit on Linux, macOS and Windows file systems
COMPLETE_MARKER = ".complete.json"  # written last: what a reorganisation was built from
POOL_MIN_IMAGES = 512  # below this, checking the images in this process is quicker than starting workers
_IMAGE_ID = re.compile(r"[0-9]+")  # ASCII digits: '²' and Arabic-Indic digits are not ids
MAX_IMAGE_ID = 2 ** 63 - 1  # ids travel through MXNet's int64 batches (a larger one breaks the batch)
log = logging.getLogger("gluon_cifar")


# Labels and image listing

def label_problem(label):
    """Why `label` cannot be a class folder's name (labels become folders), or None when it can."""
    if label in (".", ".."):
        return "is not a folder name"
    if "/" in label or "\\" in label:
        return "contains a path separator"
    if any(unicodedata.category(c) == "Cc" for c in label):  # NUL, newlines, escapes
        return "contains a control character"
    if len(label.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes, the limit of a folder name"
    return None


def _first_bad_row(fname, table, column, bad, what):
    """Raise the InputError naming the first row where `bad` holds and `what` is wrong there (one reason,
    or a reason per row); the value is shortened: it may be megabytes long."""
    if bad.any():
        row = bad.to_numpy().argmax()
        value = shorten(repr(table[column].iloc[row]), 80)
        reason = what.iloc[row] if isinstance(what, pd.Series) else what
        raise InputError(f"{fname}, line {row + 2}: {column} {value} {reason}")


def read_csv_labels(fname):
    """Read Kaggle's `trainLabels.csv` into {image id (str): class name}, rejecting malformed files.

    Every label must be usable as one folder name, and at least two classes are needed.
    """
    if not os.path.isfile(fname):
        raise InputError(f"{fname}: file not found")
    try:
        # header=None so a row with extra fields is an error, not a silently shifted index.
        table = pd.read_csv(fname, header=None, dtype=str, keep_default_na=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(f"{fname}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"{fname}: not a valid CSV file ({str(err).strip().splitlines()[-1]})") from None
    header = list(table.iloc[0].fillna(""))
    if header != ["id", "label"]:
        raise InputError(f"{fname}: header must be 'id,label', found {shorten(','.join(header), 80)!r}")
    table = table.iloc[1:].fillna("")
    table.columns = ["id", "label"]
    _first_bad_row(fname, table, "id", ~table["id"].str.fullmatch(r"[0-9]+"), "is not a whole number")
    table["id"] = table["id"].map(lambda image_id: str(int(image_id)))  # 007 is image 7
    _first_bad_row(fname, table, "id", table["id"].map(lambda image_id: int(image_id) > MAX_IMAGE_ID),
                   f"is larger than {MAX_IMAGE_ID}, the largest id the package handles")
    problems = table["label"].map({label: label_problem(label) for label in table["label"].unique()})
    for column, bad, what in (
            ("label", table["label"].eq(""), "is empty"),
            ("label", table["label"].ne(table["label"].str.strip()), "has surrounding spaces"),
            ("label", problems.notna(), problems),
            ("label", _case_clash(table["label"]), "differs only in case from an earlier label: macOS and "
                                                   "Windows would put both in one folder"),
            ("id", table["id"].duplicated(), "appears more than once")):
        _first_bad_row(fname, table, column, bad, what)
    if table.empty:
        raise InputError(f"{fname}: has a header but no rows")
    if table["label"].nunique() < 2:
        raise InputError(f"{fname}: every row has the label {shorten(repr(table['label'].iloc[0]), 80)}: "
                         "a classifier needs at least two classes")
    return dict(zip(table["id"], table["label"]))


def _case_clash(labels):
    """Rows whose label differs only in case (or Unicode form) from an earlier row's: one folder on macOS."""
    first, clashing = {}, set()
    for label in labels.unique():
        if first.setdefault(unicodedata.normalize("NFC", label).casefold(), label) != label:
            clashing.add(label)
    return labels.isin(clashing)


def list_images(folder):
    """Return [(id, path)] for the `<id>.png` files in `folder`, in numeric id order.

    Ids are ASCII digits only, at most MAX_IMAGE_ID (int64). Hidden files are ignored; any other file, and
    two files of one id (`1.png` and `1.PNG`, `2.png` and `002.png`), are an error, so nothing is silently
    trained on or predicted twice.
    """
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: {'not a folder' if os.path.exists(folder) else 'folder not found'}")
    images = []
    with os.scandir(folder) as entries:  # the listing's file types: no stat per file (60,000 files: 0.1 s)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in IMAGE_EXTENSIONS or not _IMAGE_ID.fullmatch(stem):
                raise InputError(f"{entry.path}: not an image named <id>.png (ids are ASCII digits)")
            if int(stem) > MAX_IMAGE_ID:
                raise InputError(f"{entry.path}: image id {shorten(stem, 40)} is larger than {MAX_IMAGE_ID}, "
                                 "the largest id the package handles; renumber the images")
            if not _is_file(entry):
                what = "a broken symbolic link" if entry.is_symlink() else "not a regular file"
                raise InputError(f"{entry.path}: {what}")
            images.append((int(stem), entry.path))
    images.sort()
    for (id_a, path_a), (id_b, path_b) in zip(images, images[1:]):
        if id_a == id_b:
            raise InputError(f"{path_a} and {os.path.basename(path_b)} are both image {id_a}: ambiguous, "
                             "keep one")
    return images


def _is_file(entry):
    """Whether a directory entry is a regular file or a link to one (a link loop is not)."""
    try:
        return entry.is_file()
    except OSError:
        return False


# Where outputs and the reorganisation may go

def _is_within(path, folder):
    """Whether real path `path` is `folder` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_location(data_dir, path, what):
    """Refuse `path` as a folder to write into (`what` names it, e.g. '--output-dir') where it would
    touch the user's data: the data folder, its `train/` or `test/`, a folder that holds them, or a
    folder inside `train/` or `test/` (every later run would refuse it as a stray file)."""
    real = os.path.realpath(path)
    data = os.path.realpath(data_dir)
    sources = [data] + [os.path.realpath(os.path.join(data_dir, split)) for split in ("train", "test")]
    for source in sources:
        if _is_within(source, real):
            raise InputError(f"{what} {path} is or holds the data folder's {source}: writing there could "
                             "replace the data; choose a folder of its own")
    for source in sources[1:]:
        if _is_within(real, source):
            raise InputError(f"{what} {path} is inside {source}, where a folder breaks every later run: "
                             "choose a folder outside train/ and test/")


def check_data_folder(data_dir):
    if not os.path.isdir(data_dir):
        raise InputError(f"{data_dir}: {'not a folder' if os.path.exists(data_dir) else 'data folder not found'}")


def check_output_file(path, what):
    """Refuse `path` as a file to write (`what` names it, e.g. '--output') inside a data folder's `train/` or
    `test/` (beside a trainLabels.csv), a folder of `<id>.png` images, a folder the package built (a
    reorganisation, an unpacked sample) or a subfolder of a run's output folder: each would then hold a
    file that is not its own, which stops every later run on it."""
    folder = os.path.dirname(os.path.realpath(path))
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        image = next((e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                      and _IMAGE_ID.fullmatch(os.path.splitext(e.name)[0])), None)
        if image:
            raise InputError(f"{what} {path}: {folder} is a folder of images (such as {image}), where another file "
                             "stops every run that reads it: write it elsewhere")
    inside = folder
    while True:
        parent = os.path.dirname(inside)
        if os.path.basename(inside) in ("train", "test") and os.path.isfile(os.path.join(parent, "trainLabels.csv")):
            raise InputError(f"{what} {path} is inside the data folder's {inside}, where another file stops every "
                             "run on that data: write it elsewhere")
        if fs.is_marked(inside) or (inside != folder and os.path.isfile(os.path.join(inside, RUN_MARKER))):
            raise InputError(f"{what} {path} is inside {inside}, a folder gluon_cifar builds and may rebuild: "
                             "write it elsewhere")
        if parent == inside:
            return
        inside = parent


def check_run_folders(data_dir, reorg_dir, output_dir):
    """The checks a training run makes before any work: its output and reorganisation folders are kept
    apart from the data and from each other, and the reorganisation folder is one the package may fill."""
    reorg_dir = reorg_dir or os.path.join(data_dir, REORG_DIRNAME)
    check_output_location(data_dir, output_dir, "--output-dir")
    check_output_location(data_dir, reorg_dir, "--reorg-dir")
    out, reorg = os.path.realpath(output_dir), os.path.realpath(reorg_dir)
    if _is_within(out, reorg) or _is_within(reorg, out):
        raise InputError(f"--output-dir {output_dir} and the reorganisation folder {reorg_dir} overlap: "
                         "a rebuilt reorganisation would take the outputs with it; keep them apart")
    check_reorg_target(reorg_dir)


def check_reorg_target(reorg_dir):
    """Refuse a reorganisation folder that exists and is neither empty nor the package's own."""
    if os.path.lexists(reorg_dir) and not os.path.isdir(reorg_dir):
        raise InputError(f"--reorg-dir {reorg_dir} exists and is not a folder")
    if os.path.isdir(reorg_dir) and os.listdir(reorg_dir) and not fs.is_marked(reorg_dir):
        raise InputError(f"--reorg-dir {reorg_dir} holds files and was not made by gluon_cifar "
                         f"(no {OWNER_MARKER} marker): give an empty or new folder")


@contextlib.contextmanager
def unpacking_folder(folder):
    """A new staging folder beside `folder` (gluon_cifar.fs: marked, named with this process's id) to unpack
    into, then rename the result to `folder`. The staging folder is removed when the block ends."""
    staging = fs.staging_dir(folder)
    try:
        yield staging
    finally:
        manifest = fs.Manifest(staging)
        fs.record_tree(staging, manifest)  # what this process unpacked into its new folder, and did not move out
        fs.remove_owned([staging], manifest, "the staging folder of an unpack")


# Reorganisation into class folders

def _lock_file(reorg_dir, what):
    """The lock file `.<reorg name>.<what>` beside `reorg_dir`, created if missing."""
    parent, name = os.path.split(os.path.abspath(reorg_dir))
    return fs.FileLock(os.path.join(parent, f".{name}.{what}"),
                       cannot=f"cannot write to {parent}, where the reorganised folders go: pass --reorg-dir with "
                              "a folder you can write to")


def source_files(data_dir, split, reorg_dir):
    """[(id, path, identity)] of the images of `data_dir/split`.

    A symbolic link is replaced by the regular file it resolves to, which must lie inside the data
    folder (and not in the reorganisation, which is rebuilt); identity (a hash of the content: an edit
    that keeps size and mtime changes it too) tells a reorganisation made from these very images.
    """
    data, reorg = os.path.realpath(data_dir), os.path.realpath(reorg_dir)
    files = []
    for image_id, path in list_images(os.path.join(data_dir, split)):
        identity = _content_hash(path)
        if identity is None:  # a link
            target = os.path.realpath(path)
            if not _is_within(target, data) or _is_within(target, reorg):
                raise InputError(f"{path}: a link to {target}, outside the data folder {data_dir}: "
                                 "copy the file in instead")
            path, identity = target, _content_hash(target)
        files.append((image_id, path, identity))
    return files


def _content_hash(path, chunk=1 << 16):
    """128 bits of the SHA-256 of a file's content, or None if `path` is a symbolic link.

    One open and one read for an image (a regular file reads whole up to its end); the reuse check's cost
    against the old one by size and mtime (which missed in-place edits): benchmarks/reorg_reuse.py.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = os.read(fd, chunk)
        digest = hashlib.sha256(data)
        while len(data) == chunk:
            data = os.read(fd, chunk)
            digest.update(data)
    finally:
        os.close(fd)
    return digest.hexdigest()[:32]


def _digest(lines):
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def source_stamp(labels, valid_ratio, train, test):
    """What a reorganisation is built from: the labels, every source image's content, the ratio.

    Its `data_fingerprint` part sums them up (what a run records in config.json); `images` lists every
    image's content hash (and label), so a changed image can be named (`training_data_change`).
    """
    def images(files):
        return {"images": len(files), "sha256": _digest(f"{image_id} {identity}" for image_id, _, identity in files)}
    return {"made_by": "gluon_cifar", "valid_ratio": valid_ratio,
            "labels_sha256": _digest(f"{image_id},{label}" for image_id, label in sorted(
                labels.items(), key=lambda row: int(row[0]))),
            "train": images(train), "test": images(test),
            "images": {"train": {str(image_id): f"{identity} {labels.get(str(image_id), '')}"
                                 for image_id, _, identity in train},
                       "test": {str(image_id): identity for image_id, _, identity in test}}}


FINGERPRINT_KEYS = ("valid_ratio", "labels_sha256", "train", "test")  # a data_fingerprint's
TRAINING_DATA = ("valid_ratio", "labels_sha256", "train")  # what a run trains on (test: what it predicts)


def data_fingerprint(reorg_dir):
    """The fingerprint of the data a complete reorganisation was built from: the labels' hash, the training
    and the test images' count and content hash, the valid ratio (a run records it in config.json)."""
    stamp = read_json(os.path.join(reorg_dir, COMPLETE_MARKER)) or {}
    return {key: stamp.get(key) for key in FINGERPRINT_KEYS}


def training_data_change(expected, stamp, reorg_dir):
    """What differs between the training data of fingerprint `expected` (a run's) and that of `stamp`
    (the data now), in words, or None. The images or labels that changed are named where the
    reorganisation in `reorg_dir` still is the one built from the run's data."""
    if all(expected.get(key) == stamp[key] for key in TRAINING_DATA):
        return None
    if expected.get("valid_ratio") != stamp["valid_ratio"]:
        return f"the valid ratio was {expected.get('valid_ratio')} and is now {stamp['valid_ratio']}"
    old = read_json(os.path.join(reorg_dir, COMPLETE_MARKER)) or {}
    then, now = old.get("images", {}).get("train", {}), stamp["images"]["train"]
    known = all(old.get(key) == expected.get(key) for key in TRAINING_DATA)
    for image_id in sorted(set(then) | set(now), key=int) if known else ():
        (hash_then, _, label_then), (hash_now, _, label_now) = (
            (table.get(image_id) or "").partition(" ") for table in (then, now))
        if hash_then != hash_now:
            what = "added" if not hash_then else "removed" if not hash_now else "edited"
            return f"training image {image_id} was {what}"
        if label_then != label_now:
            return f"trainLabels.csv: the label of image {image_id} was {label_then!r} and is now {label_now!r}"
    if expected.get("labels_sha256") != stamp["labels_sha256"]:
        return "trainLabels.csv holds other labels"
    return (f"the training images are others ({stamp['train']['images']} now, "
            f"{(expected.get('train') or {}).get('images')} then)")


def _checked_source(path, reorg_dir, split, name):
    """Decode `path` fully, as training will, so a bad image stops the run here and not hours into training.

    Returns the file to place: `path` itself, or for a size other than 32x32 the 32x32 PNG that
    `read_image` (the prediction path) makes of it in `.resized/<split>/` (made by `checked_sources`),
    so training, validation and prediction all see the same pixels.
    """
    img = read_original(path)
    if img.shape[:2] == IMAGE_SHAPE[:2]:
        return path
    resized = os.path.join(reorg_dir, ".resized", split, name)
    Image.fromarray(image.imresize(img, *IMAGE_SHAPE[:2]).asnumpy()).save(resized, format="PNG")
    return resized


def _checked_item(item):
    path, reorg_dir, split, name = item
    return name, _checked_source(path, reorg_dir, split, name)


def checked_sources(files, reorg_dir, split, manifest, processes=None):
    """[(name, file to place)] for the `source_files` of `split`, in order, each checked by `_checked_source`.

    The images are decoded by `processes` worker processes (default: one per core this process may use,
    or none below `POOL_MIN_IMAGES` images). The workers are forked, as DataLoader's are (MXNet restarts
    its engine in a forked child); the first bad image in `files`' order stops the check with its one-line
    InputError, raised here as in a single process. The workers only write resized copies; this process
    records them in `manifest`.
    """
    items = [(path, reorg_dir, split, f"{image_id}{os.path.splitext(path)[1]}") for image_id, path, _ in files]
    fs.make_dirs(os.path.join(reorg_dir, ".resized", split), manifest)
    if processes is None:
        processes = len(os.sched_getaffinity(0)) if len(items) >= POOL_MIN_IMAGES else 1
    if processes <= 1:
        checked = [_checked_item(item) for item in items]
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            chunk = max(1, min(256, len(items) // (8 * processes)))  # several chunks a worker: an even finish
            checked = list(pool.imap(_checked_item, items, chunksize=chunk))
    for (path, *_), (_, placed) in zip(items, checked):
        if placed != path:
            manifest.record(placed)
    return checked


def _place(src, folder, name, manifest):
    fs.make_dirs(folder, manifest)
    fs.link_or_copy(src, os.path.join(folder, name), manifest)


def reorg_train_valid(train_files, labels, valid_ratio, reorg_dir, manifest=None):
    """Split the training images (`source_files` of `train/`) into class folders under `reorg_dir`, as the
    chapter does.

    n is the image count of the rarest class; the first max(1, floor(n * valid_ratio)) images of each
    class (in numeric id order, so the split never depends on listing order) go to `valid/`, the rest
    to `train/`, and every image to `train_valid/`. Returns the number of validation images per class.
    Each file placed is recorded in `manifest` (default: `reorg_dir`'s).
    """
    manifest = manifest or fs.Manifest(reorg_dir)
    if not 0 < valid_ratio < 1:
        raise InputError(f"valid ratio must be between 0 and 1 (exclusive), got {valid_ratio}")
    unlabelled = [path for image_id, path, _ in train_files if str(image_id) not in labels]
    if unlabelled:
        raise InputError(f"{unlabelled[0]}: image has no row in trainLabels.csv")
    image_ids = {str(image_id) for image_id, _, _ in train_files}
    missing = [image_id for image_id in labels if image_id not in image_ids]
    if missing:
        raise InputError(f"trainLabels.csv: id {missing[0]} has no image {missing[0]}.png in train/")
    class_sizes = collections.Counter(labels.values())
    rarest, n = class_sizes.most_common()[-1]
    n_valid_per_label = max(1, math.floor(n * valid_ratio))
    if n - n_valid_per_label < 1:
        raise InputError(f"class {shorten(repr(rarest), 80)} has only {n} image(s): too few to hold out "
                         f"{n_valid_per_label} for validation and still train on it")
    label_count = collections.Counter()
    for (image_id, _, _), (name, path) in zip(train_files, checked_sources(train_files, reorg_dir, "train", manifest)):
        label = labels[str(image_id)]
        _place(path, os.path.join(reorg_dir, "train_valid", label), name, manifest)
        if label_count[label] < n_valid_per_label:
            _place(path, os.path.join(reorg_dir, "valid", label), name, manifest)
            label_count[label] += 1
        else:
            _place(path, os.path.join(reorg_dir, "train", label), name, manifest)
    return n_valid_per_label


def reorg_test(test_files, reorg_dir, manifest=None):
    """Place every test image in `reorg_dir/test/unknown`, the one-class folder ImageFolderDataset needs."""
    manifest = manifest or fs.Manifest(reorg_dir)
    for name, path in checked_sources(test_files, reorg_dir, "test", manifest):
        _place(path, os.path.join(reorg_dir, "test", "unknown"), name, manifest)


def unpack_archives(data_dir):
    """Unpack Kaggle's `train.7z`/`test.7z` beside the CSVs when their folders are missing."""
    for split in ("train", "test"):
        folder, archive = os.path.join(data_dir, split), os.path.join(data_dir, f"{split}.7z")
        if os.path.isdir(folder) or not os.path.isfile(archive):
            continue
        import py7zr  # only needed for the competition download
        log.info("unpacking %s (%.0f MB, once; the two archives of 60,000 images took 55 s on 2 cores)", archive,
                 os.path.getsize(archive) / 1e6)
        with unpacking_folder(folder) as staging:
            try:
                with py7zr.SevenZipFile(archive) as z:
                    z.extractall(staging)
            except (py7zr.exceptions.Bad7zFile, OSError) as err:
                raise InputError(f"{archive}: cannot unpack ({err})") from None
            fs.rename_into_place(os.path.join(staging, split), folder)  # the user's data from now on


def _build(train, test, labels, valid_ratio, stamp, reorg_dir):
    """Build the reorganisation in a staging folder beside `reorg_dir` and publish it by renaming.

    The completion marker is written last, so a folder without it is never taken for a finished one.
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
            reorg_train_valid(train, labels, valid_ratio, staging, manifest)
            reorg_test(test, staging, manifest)
        write_json(os.path.join(staging, COMPLETE_MARKER), stamp)
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
            stamp = source_stamp(labels, valid_ratio, train, test)
            change = resumes and training_data_change(resumes, stamp, reorg_dir)
            if change:
                raise InputError(f"--resume continues the run on the data it started on, but {change} (in "
                                 f"{data_dir}): restore that data, or start a new run (--overwrite or another "
                                 "--output-dir)")
            if read_json(os.path.join(reorg_dir, COMPLETE_MARKER)) != stamp:
                check_reorg_target(reorg_dir)  # again, under the lock
                in_use.take(busy=f"{reorg_dir} is in use by a run training on it, and was built from other "
                                 "labels, images or --valid-ratio: rebuilding it now would change that run's "
                                 "data; wait for it to end, or give this run its own --reorg-dir")
                log.info("reorganising %d training and %d test images into class folders in %s (hard links; "
                         "every image decoded once to catch damaged files; done once, reused by later runs)",
                         len(train), len(test), reorg_dir)
                _build(train, test, labels, valid_ratio, stamp, reorg_dir)
            in_use.take(shared=True)  # under the build lock: no rebuild can come in between
        finally:
            build.close()
        yield reorg_dir
    finally:
        in_use.close()


# The demo set

DEMO_SOURCES = ("auto", "download", "bundled")
DEMO_URL_VARIABLE = "GLUON_CIFAR_DEMO_URL"  # a mirror of d2l's kaggle_cifar10_tiny.zip (same SHA-1)
BUNDLED_SAMPLE = os.path.join(os.path.dirname(__file__), "demo_sample.zip")
_SAMPLE_STAMP = ".bundled_sample.json"


class DownloadError(InputError):
    """The demo set could not be fetched: offline, a proxy in the way, or a mirror serving another file."""


def mirror_url(environ=os.environ):
    """The demo set's URL from GLUON_CIFAR_DEMO_URL, or None where it is unset or empty; refused unless it is an
    http(s) URL of a file (d2l names the download after its last part)."""
    url = environ.get(DEMO_URL_VARIABLE)
    if not url:  # empty is unset, as before
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        parts = None
    if (not parts or parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.rsplit("/", 1)[-1]
            or any(c.isspace() or unicodedata.category(c) == "Cc" for c in url)):
        raise InputError(f"{DEMO_URL_VARIABLE} must be the http(s) URL of a mirror's kaggle_cifar10_tiny.zip, "
                         f"got {shorten(repr(url), 80)}: fix or unset it")
    return url


def demo_dir(cache_dir=DEFAULT_CACHE_DIR):
    """Where `download_demo` puts the demo set."""
    return os.path.join(os.path.expanduser(cache_dir), "kaggle_cifar10_tiny")


def download_demo(cache_dir=DEFAULT_CACHE_DIR):
    """Fetch d2l's `cifar10_tiny` demo set (SHA-1 checked) into `cache_dir`; return its folder.

    The URL is d2l's, or the one in the GLUON_CIFAR_DEMO_URL environment variable.
    """
    import requests
    from d2l import mxnet as d2l  # heavy (matplotlib, IPython): imported only for the demo
    url, sha1 = d2l.DATA_HUB["cifar10_tiny"]
    url = mirror_url() or url
    cache_dir = os.path.expanduser(cache_dir)
    folder = demo_dir(cache_dir)
    if os.path.isfile(os.path.join(folder, "trainLabels.csv")):
        return folder
    try:
        zip_path = d2l.download(url, cache_dir, sha1)
    except requests.RequestException as err:
        raise DownloadError(f"cannot download the demo set from {url} ({type(err).__name__})") from None
    except OSError as err:  # after RequestException, which is one
        raise InputError(f"cannot write the demo set into {cache_dir}: {err.strerror or err}") from None
    with open(zip_path, "rb") as f:
        if hashlib.sha1(f.read()).hexdigest() != sha1:
            cache = fs.Manifest(cache_dir)  # d2l.download has just written it: a cached file of this SHA-1 is kept
            cache.record(zip_path)
            fs.remove_owned([zip_path], cache, "a download with the wrong SHA-1")
            raise DownloadError(f"the demo set downloaded from {url} has the wrong SHA-1 (removed)")
    with unpacking_folder(folder) as staging, zipfile.ZipFile(zip_path) as z:
        z.extractall(staging)
        fs.rename_into_place(os.path.join(staging, "kaggle_cifar10_tiny"), folder)
    return folder


def bundled_sample(cache_dir=DEFAULT_CACHE_DIR):
    """Unpack the sample shipped in the package into `cache_dir/demo_sample`; return that folder.

    The sample is 40 training images of each class and the 5 test images of d2l's `cifar10_tiny`,
    Kaggle layout. Training writes inside its data folder, and the package's own folder may be
    read-only, hence the copy. It is unpacked beside its place and renamed into it once complete;
    a complete unpack of the same archive is reused, one of an older archive replaced.
    """
    with open(BUNDLED_SAMPLE, "rb") as f:
        stamp = {"sha1": hashlib.sha1(f.read()).hexdigest()}
    folder = os.path.join(os.path.expanduser(cache_dir), "demo_sample")
    found = read_json(os.path.join(folder, _SAMPLE_STAMP))
    if found == stamp:
        return folder
    if os.path.exists(folder) and found is None:
        raise InputError(f"{folder}: exists but is not the bundled sample this package unpacked; "
                         "move it away or choose another --cache-dir")
    try:
        staging = fs.staging_dir(folder)
        try:
            with zipfile.ZipFile(BUNDLED_SAMPLE) as z:
                z.extractall(staging)
            fs.record_tree(staging, fs.Manifest(staging))
            write_json(os.path.join(staging, _SAMPLE_STAMP), stamp, fs.Manifest(staging))
        except BaseException:
            fs.remove_owned([staging], fs.Manifest(staging), "the staging folder of an unpack")
            raise
        fs.replace_folder(staging, folder, "an older sample is replaced")  # only the files an unpack wrote
    except OSError as err:
        raise InputError(f"cannot unpack the bundled sample into {folder}: {err.strerror or err}") from None
    return folder


def demo_data_dir(cache_dir=DEFAULT_CACHE_DIR, source="auto"):
    """The Kaggle-layout folder to use when no data folder was given.

    source: "download" is the chapter's demo set (cached, else downloaded) or an error; "bundled" is
    the small sample shipped in the package; "auto" is the demo set, or the sample when the download
    fails, saying so in one warning line. Messages name a data folder the way the command was run:
    `make demo` sets GLUON_CIFAR_VIA_MAKE, and make takes DATA_DIR=, not flags.
    """
    if source == "bundled":
        return bundled_sample(cache_dir)
    via_make = bool(os.environ.get("GLUON_CIFAR_VIA_MAKE"))
    own_data = "make demo DATA_DIR=/path" if via_make else "--data-dir /path"
    try:
        return download_demo(cache_dir)
    except DownloadError as err:
        if source == "download":
            bundled = "" if via_make else " or use the bundled sample (--demo-source bundled)"
            raise InputError(f"{err}; offline? name a Kaggle-layout folder ({own_data}){bundled}") from None
        logging.getLogger("gluon_cifar").warning(
            f"{err}: training on the small sample bundled with the package instead (your own data: {own_data})")
    return bundled_sample(cache_dir)


# Transforms, datasets and loaders

def chapter_train_transform():
    """The chapter's augmentation: upscale to 40, random square crop of 64-100% area back to 32, flip."""
    return transforms.Compose([
        transforms.Resize(40),
        transforms.RandomResizedCrop(32, scale=(0.64, 1.0), ratio=(1.0, 1.0)),
        transforms.RandomFlipLeftRight(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


def test_transform():
    """The chapter's evaluation transform: only tensor layout and normalisation."""
    return transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


class ReflectPad(gluon.HybridBlock):
    """Pad an HWC image by `pad` pixels on each side with its mirror image (edge pixels not repeated)."""

    def __init__(self, pad):
        super().__init__()
        self._pad_width = ((pad, pad), (pad, pad), (0, 0))

    def hybrid_forward(self, F, x):
        return F.np.pad(x, self._pad_width, mode="reflect")


class RandomCrop(gluon.Block):
    """A random `size` x `size` window of an HWC image, not resampled (MXNet's `image.random_crop`)."""

    def __init__(self, size):
        super().__init__()
        self._size = (size, size)

    def forward(self, x):
        return image.random_crop(x, self._size)[0]


class Cutout(gluon.Block):
    """Fill one random `size` x `size` square that lies inside an HWC image with the pixel `fill`.

    MXNet 1.9.1 has no random erasing; this is GluonCV's `RandomErasing` fixed to a square, always applied.
    """

    def __init__(self, size, fill):
        super().__init__()
        self._size, self._fill = size, fill

    def forward(self, x):
        height, width, _ = x.shape
        top, left = random.randint(0, height - self._size), random.randint(0, width - self._size)
        x = x.copy()
        x[top:top + self._size, left:left + self._size] = np.array(self._fill, dtype=x.dtype)
        return x


def padcrop_train_transform(cutout=0):
    """The usual CIFAR augmentation: reflect-pad 4, random 32x32 crop, flip; no resampling, unlike the chapter's.

    With `cutout` > 0, one random `cutout` x `cutout` square inside the image is filled with the mean pixel.
    """
    steps = [ReflectPad(4), RandomCrop(32), transforms.RandomFlipLeftRight()]
    if cutout:
        steps.append(Cutout(cutout, tuple(int(255 * m) for m in CIFAR10_MEAN)))
    return transforms.Compose(steps + [test_transform()])


AUGMENTATIONS = ("chapter", "padcrop")


def make_train_transform(augment="chapter", cutout=0):
    """The training transform named `augment` (one of AUGMENTATIONS); cutout is offered with padcrop."""
    if not 0 <= cutout < 32:
        raise InputError(f"cutout must be 0 (off) to 31 pixels, got {cutout}")
    if augment == "chapter":
        if cutout:
            raise InputError("cutout is offered with the padcrop augmentation only")
        return chapter_train_transform()
    return padcrop_train_transform(cutout)


def load_datasets(reorg_dir):
    """One `ImageFolderDataset` per labelled split of `reorg_dir`, keyed by split name."""
    return {split: gluon.data.vision.ImageFolderDataset(os.path.join(reorg_dir, split))
            for split in SPLITS}


def make_loaders(datasets, batch_size, train_transform, num_workers=0, rank=0, workers=1, splits=SPLITS):
    """The chapter's loaders of `splits`: training splits shuffled and augmented, valid plain and in order.

    In a job of `workers` workers, worker `rank` gets its part of each global batch (`ShardSampler`).
    """
    def loader(split):
        shuffle = split != "valid"  # the training splits, augmented
        sampler = ShardSampler(len(datasets[split]), workers, rank, batch_size) if shuffle and workers > 1 else None
        transform = train_transform if shuffle else test_transform()
        return gluon.data.DataLoader(datasets[split].transform_first(transform), batch_size,
                                     shuffle=shuffle and sampler is None, sampler=sampler, last_batch="discard",
                                     num_workers=num_workers)
    return {split: loader(split) for split in splits}


def check_num_workers(num_workers):
    """Refuse a DataLoader worker count below 0 or above 4 per core (at least 8): --num-workers 100000 forked
    processes until the machine ran out of them."""
    most = max(8, 4 * (os.cpu_count() or 1))
    if not 0 <= num_workers <= most:
        raise InputError(f"--num-workers must be from 0 to {most} (4 per core here), got {num_workers}")


def check_loader_options(augment, fast, distributed):
    """Refuse what the loaders lack: the fast path has only the chapter's augmentation and no sharding."""
    if fast and (augment != "chapter" or distributed):
        raise InputError("--fast-data has only the chapter's augmentation and no sharding across workers yet: "
                         "drop --fast-data, or use --augment chapter without a dist kvstore")


def make_run_loaders(reorg_dir, datasets, splits, batch_size, augment="chapter", cutout=0, num_workers=0,
                     fast=False, rank=0, workers=1):
    """The loaders of `splits` that a training run asks for: the chapter's (`make_loaders`; in a job of
    `workers`, worker `rank`'s part of each batch), or with `fast` the decoded-once loaders of `gluon_cifar.fastdata`.

    A batch size that leaves one of them without a full batch is refused, naming the sizes.
    """
    check_loader_options(augment, fast, distributed=workers > 1)
    for split in splits:
        shares = workers if split in ("train", "train_valid") else 1  # a global batch of the job
        if len(datasets[split]) < shares * batch_size:
            what = f"{workers} workers x --batch-size {batch_size}" if shares > 1 else f"--batch-size {batch_size}"
            raise InputError(f"{what} is larger than the {len(datasets[split])} images of the {split} split: no "
                             f"full batch of it; use --batch-size {len(datasets[split]) // shares} or less")
    if fast:
        return {split: fast_loader(reorg_dir, split, batch_size) for split in splits}
    return make_loaders(datasets, batch_size, make_train_transform(augment, cutout), num_workers, rank, workers,
                        splits)


class ShardSampler(gluon.data.Sampler):
    """Worker `rank`'s part of every global batch: the examples that one process with `num_shards` devices
    and batch `num_shards` x `batch_size` gives its device `rank` (gluon_cifar.distributed: one learning rule).

    Each pass shuffles every index as gluon's RandomSampler does (NumPy's generator, which the workers
    seed alike), cuts the order into global batches (dropping the incomplete last one, as the loaders do)
    and yields the `rank`-th `batch_size` of each.
    """

    def __init__(self, length, num_shards, rank, batch_size):
        self._shape = (length // (num_shards * batch_size), num_shards, batch_size)
        self._length, self._rank = length, rank

    def __iter__(self):
        order = onp.arange(self._length)
        onp.random.shuffle(order)
        batches = order[:int(onp.prod(self._shape))].reshape(self._shape)
        return iter(batches[:, self._rank].ravel().tolist())

    def __len__(self):
        return self._shape[0] * self._shape[2]


class ImageFilesDataset(gluon.data.Dataset):
    """Images of a flat folder such as Kaggle's `test/`, as (image, id) pairs in numeric id order."""

    def __init__(self, folder):
        self.items = list_images(folder)
        if not self.items:
            raise InputError(f"{folder}: no images")

    def __getitem__(self, idx):
        image_id, path = self.items[idx]
        return read_image(path), image_id

    def __len__(self):
        return len(self.items)
