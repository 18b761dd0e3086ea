"""Checking and linking the source images into the reorganisation's class folders: every image read and
checked once, in full, by the workers of gluon_cifar.data.parallel, so a bad image stops the build, not
training hours later; a size other than 32x32 placed as the 32x32 PNG prediction would make of it.
"""
import functools
import os

from mxnet import image
from PIL import Image

from gluon_cifar import fs
from gluon_cifar.data.fingerprint import read_source, with_identities
from gluon_cifar.data.parallel import map_in_workers, worker_count
from gluon_cifar.images import IMAGE_SHAPE, read_original


def _checked_source(path, manifest, split, name):
    """(identity, file to place) of source image `path`, checked in full (a Kaggle PNG by its one read, any
    other image decoded as training decodes it), so a bad image stops the run here, not hours into training.

    The file to place is `path` itself, or for a size other than 32x32 the 32x32 PNG that `read_image`
    (the prediction path) makes of it in `.resized/<split>/` of `manifest`'s folder (made by `place_images`),
    named in the manifest before it is written, so training, validation and prediction all see the same pixels.
    """
    identity, proven = read_source(path, prove=True)
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
