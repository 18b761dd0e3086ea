"""Data stage: Kaggle's labels, the chapter's folder reorganisation, its transforms and its loaders.

Kaggle layout in, `train_valid_test/{train,valid,train_valid,test/unknown}` class folders out,
read back with `ImageFolderDataset` + `transform_first` exactly as the chapter does.
"""
import collections
import hashlib
import math
import os
import shutil
import zipfile

import numpy as onp
import pandas as pd
from mxnet import gluon
from mxnet.gluon.data.vision import transforms
from PIL import Image

from .atomic import atomic_path, read_json, write_json
from .errors import InputError
from .fastdata import fast_loader
from .images import CIFAR10_MEAN, CIFAR10_STD, IMAGE_SHAPE, image_size, read_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
REORG_DIRNAME = "train_valid_test"
SPLITS = ("train", "valid", "train_valid")  # the labelled splits; test/unknown holds the test images
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "gluon_cifar")
_COMPLETE_MARKER = ".complete.json"


# Labels and image listing

def read_csv_labels(fname):
    """Read Kaggle's `trainLabels.csv` into {image id (str): class name}, rejecting malformed files."""
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
        raise InputError(f"{fname}: header must be 'id,label', found {','.join(header)!r}")
    table = table.iloc[1:].fillna("")
    table.columns = ["id", "label"]
    for column, bad, what in (
            ("id", ~table["id"].str.fullmatch(r"[0-9]+"), "is not a whole number"),
            ("label", table["label"].eq(""), "is empty"),
            ("label", table["label"].ne(table["label"].str.strip()), "has surrounding spaces"),
            ("id", table["id"].duplicated(), "appears more than once")):
        if bad.any():
            row = bad.to_numpy().argmax()
            raise InputError(f"{fname}, line {row + 2}: {column} {table[column].iloc[row]!r} {what}")
    if table.empty:
        raise InputError(f"{fname}: has a header but no rows")
    return dict(zip(table["id"], table["label"]))


def list_images(folder):
    """Return [(id, path)] for the `<id>.png` files in `folder`, in numeric id order.

    Hidden files are ignored; any other file is an error, so a stray file is never silently trained on.
    """
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: folder not found")
    images = []
    with os.scandir(folder) as entries:  # the listing's file types: no stat per file (60,000 files: 0.1 s)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in IMAGE_EXTENSIONS or not stem.isdigit() or not entry.is_file():
                raise InputError(f"{entry.path}: not an image named <id>.png")
            images.append((int(stem), entry.path))
    images.sort()
    return images


# Reorganisation into class folders

def _link_or_copy(src, dst):
    """Hard-link `src` to `dst` (copy where links are impossible).

    A `dst` that is already a link to `src` is kept; anything else there (say a file left half-copied
    by an interrupted run) is replaced.
    """
    if os.path.exists(dst):
        if os.path.samefile(src, dst):
            return
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def _checked_source(path, reorg_dir, split):
    """Decode `path` fully, so a corrupt image stops the run here and not hours into training.

    Returns the file to place: `path` itself, or for a size other than 32x32 the 32x32 PNG that
    `read_image` (the prediction path) makes of it, so training, validation and prediction all see
    the same pixels.
    """
    if image_size(path) == IMAGE_SHAPE[:2]:
        return path
    resized = os.path.join(reorg_dir, ".resized", split, os.path.basename(path))
    os.makedirs(os.path.dirname(resized), exist_ok=True)
    with atomic_path(resized) as tmp:
        Image.fromarray(read_image(path).asnumpy()).save(tmp, format="PNG")
    return resized


def _place(src, folder):
    os.makedirs(folder, exist_ok=True)
    _link_or_copy(src, os.path.join(folder, os.path.basename(src)))


def reorg_train_valid(data_dir, labels, valid_ratio, reorg_dir):
    """Split `data_dir/train` into class folders under `reorg_dir`, as the chapter does.

    n is the image count of the rarest class; the first max(1, floor(n * valid_ratio)) images of each
    class (in numeric id order, so the split never depends on listing order) go to `valid/`, the rest
    to `train/`, and every image to `train_valid/`. Returns the number of validation images per class.
    """
    if not 0 < valid_ratio < 1:
        raise InputError(f"valid ratio must be between 0 and 1 (exclusive), got {valid_ratio}")
    images = list_images(os.path.join(data_dir, "train"))
    unlabelled = [path for image_id, path in images if str(image_id) not in labels]
    if unlabelled:
        raise InputError(f"{unlabelled[0]}: image has no row in trainLabels.csv")
    image_ids = {str(image_id) for image_id, _ in images}
    missing = [image_id for image_id in labels if image_id not in image_ids]
    if missing:
        raise InputError(f"trainLabels.csv: id {missing[0]} has no image {missing[0]}.png in "
                         f"{os.path.join(data_dir, 'train')}")
    class_sizes = collections.Counter(labels.values())
    rarest, n = class_sizes.most_common()[-1]
    n_valid_per_label = max(1, math.floor(n * valid_ratio))
    if n - n_valid_per_label < 1:
        raise InputError(f"class {rarest!r} has only {n} image(s): too few to hold out "
                         f"{n_valid_per_label} for validation and still train on it")
    label_count = collections.Counter()
    for image_id, path in images:
        label = labels[str(image_id)]
        path = _checked_source(path, reorg_dir, "train")
        _place(path, os.path.join(reorg_dir, "train_valid", label))
        if label_count[label] < n_valid_per_label:
            _place(path, os.path.join(reorg_dir, "valid", label))
            label_count[label] += 1
        else:
            _place(path, os.path.join(reorg_dir, "train", label))
    return n_valid_per_label


def reorg_test(data_dir, reorg_dir):
    """Place every test image in `reorg_dir/test/unknown`, the one-class folder ImageFolderDataset needs."""
    images = list_images(os.path.join(data_dir, "test"))
    if not images:
        raise InputError(f"{os.path.join(data_dir, 'test')}: no test images")
    for _, path in images:
        _place(_checked_source(path, reorg_dir, "test"), os.path.join(reorg_dir, "test", "unknown"))


def unpack_archives(data_dir):
    """Unpack Kaggle's `train.7z`/`test.7z` beside the CSVs when their folders are missing."""
    for split in ("train", "test"):
        folder, archive = os.path.join(data_dir, split), os.path.join(data_dir, f"{split}.7z")
        if os.path.isdir(folder) or not os.path.isfile(archive):
            continue
        import py7zr  # only needed for the competition download
        staging = os.path.join(data_dir, f".{split}.unpacking")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with py7zr.SevenZipFile(archive) as z:
                z.extractall(staging)
        except (py7zr.exceptions.Bad7zFile, OSError) as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise InputError(f"{archive}: cannot unpack ({err})") from None
        os.rename(os.path.join(staging, split), folder)
        shutil.rmtree(staging)


def reorg_cifar10_data(data_dir, valid_ratio, reorg_dir=None):
    """Build `train_valid_test/` from a Kaggle-layout folder; return its path.

    Idempotent: a complete reorganisation for the same data and ratio is reused. Work happens in
    `<reorg_dir>.partial`, renamed into place only once complete, so an interrupted run is resumed by
    the next call and a partial folder is never mistaken for a complete one. Sources are only read.
    """
    unpack_archives(data_dir)
    reorg_dir = reorg_dir or os.path.join(data_dir, REORG_DIRNAME)
    labels = read_csv_labels(os.path.join(data_dir, "trainLabels.csv"))
    stamp = {"valid_ratio": valid_ratio, "num_labels": len(labels),
             "num_train_files": len(list_images(os.path.join(data_dir, "train"))),
             "num_test_files": len(list_images(os.path.join(data_dir, "test")))}
    if read_json(os.path.join(reorg_dir, _COMPLETE_MARKER)) == stamp:
        return reorg_dir
    partial = reorg_dir + ".partial"
    if read_json(os.path.join(partial, ".stamp.json")) != stamp:
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        write_json(os.path.join(partial, ".stamp.json"), stamp)
    reorg_train_valid(data_dir, labels, valid_ratio, partial)
    reorg_test(data_dir, partial)
    write_json(os.path.join(partial, _COMPLETE_MARKER), stamp)
    shutil.rmtree(reorg_dir, ignore_errors=True)  # an older split of the same data: derived, safe to drop
    os.rename(partial, reorg_dir)
    return reorg_dir


# The demo set

def download_demo(cache_dir=DEFAULT_CACHE_DIR):
    """Fetch d2l's `cifar10_tiny` demo set (SHA-1 checked) into `cache_dir`; return its folder."""
    import requests
    from d2l import mxnet as d2l  # heavy (matplotlib, IPython): imported only for the demo
    url, sha1 = d2l.DATA_HUB["cifar10_tiny"]
    cache_dir = os.path.expanduser(cache_dir)
    folder = os.path.join(cache_dir, "kaggle_cifar10_tiny")
    if os.path.isfile(os.path.join(folder, "trainLabels.csv")):
        return folder
    try:
        zip_path = d2l.download(url, cache_dir, sha1)
    except requests.RequestException as err:
        raise InputError(f"cannot download the demo set from {url} ({type(err).__name__}); "
                         f"offline? pass --data-dir with a Kaggle-layout folder instead") from None
    with open(zip_path, "rb") as f:
        if hashlib.sha1(f.read()).hexdigest() != sha1:
            os.remove(zip_path)
            raise InputError(f"{zip_path}: SHA-1 mismatch with {url}; removed, run again")
    staging = folder + ".unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(staging)
    os.rename(os.path.join(staging, "kaggle_cifar10_tiny"), folder)
    shutil.rmtree(staging)
    return folder


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


def padcrop_train_transform(cutout=0):
    """The usual CIFAR augmentation: reflect-pad 4, random 32x32 crop, flip; no resampling, unlike the chapter's.

    With `cutout` > 0, one random `cutout` x `cutout` square is filled with the mean pixel (GluonCV's
    `RandomErasing`, fixed to a square that lies inside the image).
    """
    from gluoncv.data.transforms.block import RandomCrop, RandomErasing  # only this recipe needs GluonCV
    steps = [ReflectPad(4), RandomCrop(32), transforms.RandomFlipLeftRight()]
    if cutout:
        area = cutout ** 2 / 32 ** 2
        steps.append(RandomErasing(probability=1.0, s_min=area, s_max=area, ratio=1.0,
                                   mean=tuple(255 * m for m in CIFAR10_MEAN)))
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


def make_loaders(datasets, batch_size, train_transform, num_workers=0, rank=0, workers=1):
    """The chapter's loaders: training splits shuffled and augmented, valid plain and in order.

    In a job of `workers` workers, worker `rank` gets its part of each global batch (`ShardSampler`).
    """
    def loader(split, transform, shuffle):
        sampler = ShardSampler(len(datasets[split]), workers, rank, batch_size) if shuffle and workers > 1 else None
        return gluon.data.DataLoader(datasets[split].transform_first(transform), batch_size,
                                     shuffle=shuffle and sampler is None, sampler=sampler, last_batch="discard",
                                     num_workers=num_workers)
    return {"train": loader("train", train_transform, True),
            "train_valid": loader("train_valid", train_transform, True),
            "valid": loader("valid", test_transform(), False)}


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
    loaders = make_loaders(datasets, batch_size, make_train_transform(augment, cutout), num_workers, rank, workers)
    return {split: loaders[split] for split in splits}


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
