"""Fast input path: images decoded once into a uint8 array, the chapter's augmentation applied per batch.

The chapter's `ImageFolderDataset` + `transform_first` decodes every PNG and runs five transforms one
image at a time on every epoch (~1,000 img/s here). This path decodes each split once (cached beside the
reorganised folders), then draws the chapter's crop parameters for a whole batch at once and resizes
with OpenCV, which MXNet's `image.resize` wraps (pixel-identical for the same parameters):
Resize(40) -> RandomResizedCrop(32, scale=(0.64, 1), ratio=1) -> RandomFlipLeftRight -> ToTensor ->
Normalize. `crop_params` states the distribution; tests/unit/test_fastdata.py checks it against the
chapter's transforms over many samples.
"""
import os

import cv2
import mxnet as mx
import numpy as onp
from mxnet import gluon

from gluon_cifar.fs import atomic_path
from gluon_cifar.images import IMAGE_SHAPE, decode_batch, normalize, prefetch

RESIZE = 40               # transforms.Resize(40)
CROP_SCALE = (0.64, 1.0)  # RandomResizedCrop's area fraction; ratio (1, 1): square crops
_CACHE_SUFFIX = ".uint8.npz"


# Decoding once

def decoded_split(reorg_dir, split):
    """(images uint8 NHWC, labels int32, synsets) of `reorg_dir/split`, decoded once into `<split>.uint8.npz`.

    The cache sits beside the split's folder and is rebuilt when its file list differs.
    """
    dataset = gluon.data.vision.ImageFolderDataset(os.path.join(reorg_dir, split))
    names = onp.array([os.path.relpath(path, reorg_dir) for path, _ in dataset.items])
    cache = os.path.join(reorg_dir, split + _CACHE_SUFFIX)
    if os.path.isfile(cache):
        with onp.load(cache) as saved:
            if onp.array_equal(saved["names"], names):
                return saved["images"], saved["labels"], dataset.synsets
    images = decode_batch([path for path, _ in dataset.items])
    labels = onp.array([label for _, label in dataset.items], onp.int32)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        onp.savez(f, images=images, labels=labels, names=names)
    return images, labels, dataset.synsets


# The chapter's augmentation, a batch at a time

def crop_params(n, rng=onp.random, scale=CROP_SCALE):
    """Crop side, left, top and flip for `n` images, drawn as the chapter's transforms draw them.

    `image.random_size_crop` on the 40x40 image: area U(scale) * 1600, side round(sqrt(area)) (half to
    even, like Python's round), left and top uniform integers in [0, 40 - side]; flip with probability 1/2.
    """
    side = onp.rint(onp.sqrt(rng.uniform(*scale, size=n) * RESIZE * RESIZE)).astype(int)
    left = (rng.uniform(size=n) * (RESIZE - side + 1)).astype(int)
    top = (rng.uniform(size=n) * (RESIZE - side + 1)).astype(int)
    flip = rng.uniform(size=n) < 0.5
    return side, left, top, flip


def augment(images, params):
    """Apply crop parameters from `crop_params` to uint8 NHWC 32x32 `images`; uint8 NHWC out."""
    out = onp.empty_like(images)
    size = IMAGE_SHAPE[:2]
    for i, (img, side, left, top, flip) in enumerate(zip(images, *params)):
        big = cv2.resize(img, (RESIZE, RESIZE), interpolation=cv2.INTER_LINEAR)
        crop = cv2.resize(big[top:top + side, left:left + side], size, interpolation=cv2.INTER_LINEAR)
        out[i] = crop[:, ::-1] if flip else crop
    return out


class FastLoader:
    """The chapter's `DataLoader` over decoded-once images: (X float32 NCHW, y int32) batches.

    `augment=True` applies the chapter's training augmentation; False only its test transform. The
    next batch is prepared in a thread while the caller trains on the current one.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, last_batch="discard", augment=True):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.keep_tail = last_batch == "keep"

    def __len__(self):
        full, tail = divmod(len(self.images), self.batch_size)
        return full + (1 if self.keep_tail and tail else 0)

    def _batches(self, order):
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            yield (augment(x, crop_params(len(idx))) if self.augment else x), self.labels[idx]

    def __iter__(self):
        order = onp.random.permutation(len(self.images)) if self.shuffle else onp.arange(len(self.images))
        for x, y in prefetch(self._batches(order)):  # MXNet calls stay in this thread
            yield normalize(x), mx.np.array(y, dtype=onp.int32)


def fast_loader(reorg_dir, split, batch_size):
    """The FastLoader that stands in for `data.make_loaders`' loader of `split` (same shuffling,
    augmentation and tail): train and train_valid shuffled and augmented, valid plain, test keeps its tail."""
    images, labels, _ = decoded_split(reorg_dir, split)
    training = split in ("train", "train_valid")
    return FastLoader(images, labels, batch_size, shuffle=training,
                      last_batch="keep" if split == "test" else "discard", augment=training)
