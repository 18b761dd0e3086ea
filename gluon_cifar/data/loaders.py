"""The chapter's datasets and loaders: `ImageFolderDataset` + `transform_first` per split, each worker's
part of every global batch in a distributed job, and the flat test folder as (image, id) pairs."""
import os

import numpy as onp
from mxnet import gluon

from gluon_cifar.data.fastdata import fast_loader
from gluon_cifar.data.transforms import make_train_transform, test_transform
from gluon_cifar.errors import InputError
from gluon_cifar.images import list_images, read_image
from gluon_cifar.settings import check_loader_options

SPLITS = ("train", "valid", "train_valid")  # the labelled splits; test/unknown holds the test images


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


def make_run_loaders(datasets, run):
    """The loaders of the splits a Run (gluon_cifar.settings) asks for, from `datasets` of its reorganisation:
    the chapter's (`make_loaders`; in a job, this worker's part of each batch), or with `--fast-data` the
    decoded-once loaders of `gluon_cifar.fastdata`.

    A batch size that leaves one of them without a full batch is refused, naming the sizes.
    """
    config, workers = run.config, run.workers
    batch_size, fast = config.batch_size, config.fast_data
    check_loader_options(config.augment, fast, distributed=workers > 1)
    for split in run.splits:
        shares = workers if split in ("train", "train_valid") else 1  # a global batch of the job
        if len(datasets[split]) < shares * batch_size:
            what = f"{workers} workers x --batch-size {batch_size}" if shares > 1 else f"--batch-size {batch_size}"
            raise InputError(f"{what} is larger than the {len(datasets[split])} images of the {split} split: no "
                             f"full batch of it; use --batch-size {len(datasets[split]) // shares} or less")
    if fast:
        return {split: fast_loader(run.reorg_dir, split, batch_size) for split in run.splits}
    return make_loaders(datasets, batch_size, make_train_transform(config.augment, config.cutout), config.num_workers,
                        run.rank, workers, run.splits)


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
