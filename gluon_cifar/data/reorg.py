"""The chapter's folder reorganisation: Kaggle layout in, `train_valid_test/{train,valid,train_valid,
test/unknown}` class folders out (hard links, every image checked once), reused while the data stays the
same and rebuilt, through gluon_cifar.fs, when it changes; where output and reorganisation folders may go.
"""
import collections
import contextlib
import functools
import hashlib
import logging
import math
import multiprocessing
import os
import warnings

from mxnet import image
from PIL import Image

from gluon_cifar import fs
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.sources import unpack_archives
from gluon_cifar.errors import InputError, shorten
from gluon_cifar.fs import OWNER_MARKER, read_json, write_json
from gluon_cifar.images import IMAGE_SHAPE, is_complete_kaggle_png, list_images, read_original

REORG_DIRNAME = "train_valid_test"
COMPLETE_MARKER = ".complete.json"  # written last: what a reorganisation was built from
POOL_MIN_IMAGES = 512  # below this, checking the images in this process is quicker than starting workers
log = logging.getLogger("gluon_cifar")


# Labels and image listing


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


# Reorganisation into class folders

def _lock_file(reorg_dir, what):
    """The lock file `.<reorg name>.<what>` beside `reorg_dir`, created if missing."""
    parent, name = os.path.split(os.path.abspath(reorg_dir))
    return fs.FileLock(os.path.join(parent, f".{name}.{what}"),
                       cannot=f"cannot write to {parent}, where the reorganised folders go: pass --reorg-dir with "
                              "a folder you can write to")


SourceImage = collections.namedtuple("SourceImage", "id path identity")


def source_files(data_dir, split, reorg_dir):
    """[SourceImage(id, path, identity=None)] of the images of `data_dir/split` (`with_identities` reads them).

    A symbolic link is replaced by the regular file it resolves to, which must lie inside the data
    folder (and not in the reorganisation, which is rebuilt).
    """
    data, reorg = os.path.realpath(data_dir), os.path.realpath(reorg_dir)
    images = list_images(os.path.join(data_dir, split))
    with os.scandir(os.path.join(data_dir, split)) as entries:  # (the listing's file types: no stat per file)
        links = {entry.path for entry in entries if entry.is_symlink()}
    files = []
    for image_id, path in images:
        if path in links:
            target = os.path.realpath(path)
            if not _is_within(target, data) or _is_within(target, reorg):
                raise InputError(f"{path}: a link to {target}, outside the data folder {data_dir}: "
                                 "copy the file in instead")
            path = target
        files.append(SourceImage(image_id, path, None))
    return files


def with_identities(files, identities=None):
    """`files` with each one's identity: 128 bits of the SHA-256 of its content (an edit that keeps size and
    mtime changes it too), which tells a reorganisation made from these very images. Read by the workers
    of `map_in_workers`, unless given (read by the build: `place_images`)."""
    if identities is None:
        read = map_in_workers(functools.partial(_read_source, prove=False), [f.path for f in files])
        identities = [identity for identity, _ in read]
    return [SourceImage(f.id, f.path, identity) for f, identity in zip(files, identities)]


def _read_source(path, prove, chunk=1 << 16):
    """(identity, proven) of the file at `path`: its identity (`with_identities`) and, where `prove`,
    whether it is a whole Kaggle PNG (`is_complete_kaggle_png`), which needs no further check.

    One open and one read for an image (a regular file reads whole up to its end); the reuse check's cost
    against the old one by size and mtime (which missed in-place edits): benchmarks/reorg_reuse.py.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # (a file replaced by a link since it was listed)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = os.read(fd, chunk)
        digest, small = hashlib.sha256(data), len(data) < chunk
        while len(data) == chunk:
            data = os.read(fd, chunk)
            digest.update(data)
    finally:
        os.close(fd)
    return digest.hexdigest()[:32], prove and small and is_complete_kaggle_png(data)


def _digest(lines):
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def source_stamp(labels, valid_ratio, train, test):
    """What a reorganisation is built from: the labels, every source image's content, the ratio.

    Its `data_fingerprint` part sums them up (what a run records in config.json); `images` lists every
    image's content hash (and label), so a changed image can be named (`training_data_change`).
    """
    def images(files):
        return {"images": len(files), "sha256": _digest(f"{f.id} {f.identity}" for f in files)}
    return {"made_by": "gluon_cifar", "valid_ratio": valid_ratio,
            "labels_sha256": _digest(f"{image_id},{label}" for image_id, label in sorted(
                labels.items(), key=lambda row: int(row[0]))),
            "train": images(train), "test": images(test),
            "images": {"train": {str(f.id): f"{f.identity} {labels.get(str(f.id), '')}" for f in train},
                       "test": {str(f.id): f.identity for f in test}}}


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


def _checked_source(path, manifest, split, name):
    """(identity, file to place) of source image `path`, checked in full (a Kaggle PNG by its one read, any
    other image decoded as training decodes it), so a bad image stops the run here, not hours into training.

    The file to place is `path` itself, or for a size other than 32x32 the 32x32 PNG that `read_image`
    (the prediction path) makes of it in `.resized/<split>/` of `manifest`'s folder (made by `place_images`),
    named in the manifest before it is written, so training, validation and prediction all see the same pixels.
    """
    identity, proven = _read_source(path, prove=True)
    if proven:  # the Kaggle images: the one read proves them
        return identity, path
    img = read_original(path)
    if img.shape[:2] == IMAGE_SHAPE[:2]:
        return identity, path
    resized = os.path.join(manifest.root, ".resized", split, name)
    manifest.expect(resized)
    Image.fromarray(image.imresize(img, *IMAGE_SHAPE[:2]).asnumpy()).save(resized, format="PNG")
    manifest.record(resized)
    return identity, resized


def worker_count(items):
    """How many processes `map_in_workers` uses for `items` things to do: one per core this process may
    use, or one below `POOL_MIN_IMAGES` (starting workers would take longer)."""
    return len(os.sched_getaffinity(0)) if items >= POOL_MIN_IMAGES else 1


def map_in_workers(func, items, processes=None):
    """Yield func(item) for each of `items`, computed by `processes` worker processes (default:
    `worker_count`) while the caller handles earlier results.

    The workers are forked, as DataLoader's are (MXNet restarts its engine in a forked child). Results come
    in `items`' order, and so does an exception: the first item's that raised, as in a single process.
    """
    processes = worker_count(len(items)) if processes is None else processes
    if processes <= 1:
        yield from map(func, items)
        return
    with warnings.catch_warnings():  # Python 3.12+ warns of forking a threaded process: MXNet restarts its
        warnings.simplefilter("ignore", DeprecationWarning)  # engine in a forked child, as DataLoader relies on
        pool = multiprocessing.get_context("fork").Pool(processes)
    with pool:
        chunk = max(1, min(256, len(items) // (8 * processes)))  # several chunks a worker: an even finish
        yield from pool.imap(func, items, chunksize=chunk)


PLACE_BATCH = 64  # images a worker checks, then records and links in one manifest write


def _place_batch(batch, root, split):
    """In a worker: check each (source, name, folders) of `batch` (`_checked_source`) and link the file to
    place into its folders, recorded in the manifest of `root`; return the sources' identities."""
    manifest, identities, links = fs.Manifest(root), [], []
    for path, name, folders in batch:
        identity, placed = _checked_source(path, manifest, split, name)
        identities.append(identity)
        links += [(placed, os.path.join(folder, name)) for folder in folders]
    fs.link_files(links, manifest)
    return identities


def place_images(files, folders, split, manifest, processes=None):
    """Place each of `files` (`source_files` of `split`) as `<id><ext>` in each of its `folders`, checked
    by `_checked_source` (resized copies go in the manifest's folder): every image read once, by the
    workers of `map_in_workers`, which check, link and record it (in batches of PLACE_BATCH). Returns
    `files` with the identities that read gave.

    The first bad image in `files`' order stops the work with its one-line InputError (the staging folder
    being filled is then removed).
    """
    fs.make_dirs(os.path.join(manifest.root, ".resized", split), manifest)
    items = [(f.path, f"{f.id}{os.path.splitext(f.path)[1]}", where) for f, where in zip(files, folders)]
    batches = [items[start:start + PLACE_BATCH] for start in range(0, len(items), PLACE_BATCH)]
    place = functools.partial(_place_batch, root=manifest.root, split=split)
    identities = map_in_workers(place, batches, worker_count(len(items)) if processes is None else processes)
    return with_identities(files, [identity for batch in identities for identity in batch])


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


# The demo set


# Transforms, datasets and loaders


