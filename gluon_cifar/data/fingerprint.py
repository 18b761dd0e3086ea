"""What a reorganisation is built from: the source images (listed, each with the hash of its content),
the labels and the valid ratio, summed up in the stamp a finished reorganisation keeps in COMPLETE_MARKER.
The stamp decides its reuse; its fingerprint is what a run records (config.json) and what `--resume`
compares, naming the training image or label that changed.
"""
import collections
import functools
import hashlib
import os

from gluon_cifar.data.locations import is_within
from gluon_cifar.data.parallel import map_in_workers
from gluon_cifar.errors import InputError
from gluon_cifar.fs import read_json
from gluon_cifar.images import is_complete_kaggle_png, list_images

COMPLETE_MARKER = ".complete.json"  # written last: what a reorganisation was built from


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
            if not is_within(target, data) or is_within(target, reorg):
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
        read = map_in_workers(functools.partial(read_source, prove=False), [f.path for f in files])
        identities = [identity for identity, _ in read]
    return [SourceImage(f.id, f.path, identity) for f, identity in zip(files, identities)]


def read_source(path, prove, chunk=1 << 16):
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
