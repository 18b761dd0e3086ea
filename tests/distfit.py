"""The equivalence test's training (tests/test_distributed.py), the same in one process and in each worker.

`fit` on the train_valid split with the test transform (no random augmentation), so one process with
W devices and a job of W workers see the very same examples; run as a script, it is a worker of a job:

    python tests/distfit.py REORG_DIR CHECKPOINT_DIR BATCH_SIZE
"""
import sys

from gluon_cifar.settings import Run, RunConfig
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.transforms import test_transform
from gluon_cifar.training.distributed import create_kvstore, rank_and_size
from gluon_cifar.training.loop import fit, seed_everything
from gluon_cifar.model import get_net

# A schedule with warm-up and a weight decay large enough to show if either were scaled differently.
SETTINGS = dict(epochs=2, lr=0.05, wd=0.01, lr_schedule="cosine", warmup_frac=0.25, final=True)


def fit_plainly(reorg_dir, devices, batch_size, kvstore="local", checkpoint_dir=None):
    """Train a fresh ResNet-18 (seed 0) for SETTINGS; return the net."""
    rank, workers = rank_and_size(kvstore)
    config = RunConfig(devices=devices, batch_size=batch_size, **SETTINGS)
    loader = make_loaders(load_datasets(reorg_dir), batch_size, test_transform(), 0, rank, workers)["train_valid"]
    seed_everything(0)
    net = get_net(config.contexts(), num_classes=3)
    net.hybridize(static_alloc=True, static_shape=True)
    fit(net, loader, None, Run(config, kvstore=kvstore, rank=rank, workers=workers, checkpoint_dir=checkpoint_dir), 3)
    return net


if __name__ == "__main__":
    from mxnet import npx
    npx.set_np()
    reorg_dir, checkpoint_dir, batch_size = sys.argv[1:]
    fit_plainly(reorg_dir, "cpu", int(batch_size), create_kvstore("dist_sync"), checkpoint_dir)
