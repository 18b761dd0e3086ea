"""How often the chapter's demo settings (batch 4, lr 0.1, wd 5e-4, momentum 0.9) diverge in the first epoch:
the chapter's own MXNet code (d2l 1.0.3's `resnet18` and `train_batch_ch13`, the chapter's loop) against the
package's `gluon_cifar.loop.train`, side by side on the same seeds and the same reorganised data.

Each seed seeds MXNet, NumPy and Python before the net is built, so both loops start from the same weights
and draw the same batches and augmentations; what differs is only the code. Per seed and loop it prints the
first batch whose loss is not finite (or "-"), the epoch's mean training loss and the validation accuracy.

    python benchmarks/demo_divergence.py --data-dir ../shared/data/cifar10_tiny --seeds 0 1 2 3 4
"""
import argparse
import math
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gluon_cifar  # noqa: E402,F401  (first: the NumPy names MXNet reads)
import mxnet as mx  # noqa: E402
from mxnet import gluon, init, npx  # noqa: E402

from gluon_cifar import model
from gluon_cifar.training import loop
from gluon_cifar.errors import InputError  # noqa: E402
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform

BATCH, LR, WD, LR_PERIOD, LR_DECAY = 4, 0.1, 5e-4, 50, 0.1  # the chapter's demo numbers


def chapter_summary(losses, valid_acc):
    """(first non-finite batch or None, mean loss over the batches before it, valid acc)."""
    first_bad = next((i for i, value in enumerate(losses, start=1) if not math.isfinite(value)), None)
    finite = losses[:first_bad - 1] if first_bad else losses
    return first_bad, sum(finite) / max(len(finite), 1), valid_acc if first_bad is None else float("nan")


def chapter_epoch(train_iter, valid_iter, devices):
    """One epoch of the chapter's `train`, as written there: its net, trainer, d2l's batch step."""
    from d2l import mxnet as d2l
    net = d2l.resnet18(10)
    net.initialize(ctx=devices, init=init.Xavier())
    net.hybridize()
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": LR, "momentum": 0.9, "wd": WD})
    losses = []
    for features, labels in train_iter:
        batch_loss, _ = d2l.train_batch_ch13(net, features, labels.astype("float32"), loss, trainer, devices,
                                             d2l.split_batch)
        losses.append(batch_loss / labels.shape[0])
    return chapter_summary(losses, d2l.evaluate_accuracy_gpus(net, valid_iter, d2l.split_batch))


def package_epoch(train_iter, valid_iter, devices):
    """One epoch of `gluon_cifar.loop.train`, what the notebook runs: it stops at a loss that is not finite."""
    net = model.get_net(devices)
    net.hybridize()
    try:
        stats = loop.train(net, train_iter, valid_iter, 1, LR, WD, devices, LR_PERIOD, LR_DECAY)[-1]
    except InputError as err:  # "epoch 1/1, batch N: the loss is inf: ..."
        return int(re.search(r"batch (\d+)", str(err)).group(1)), float("nan"), float("nan")
    return None, stats["train_loss"], stats["valid_acc"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a Kaggle-layout folder (the 1000-image demo set)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--loops", nargs="+", default=["chapter", "package"], choices=["chapter", "package"])
    args = parser.parse_args()
    npx.set_np()
    devices = [mx.cpu()]
    with tempfile.TemporaryDirectory() as tmp:
        reorg = reorg_cifar10_data(args.data_dir, 0.1, reorg_dir=os.path.join(tmp, "train_valid_test"))
        datasets = load_datasets(reorg)
        print(f"{len(datasets['train'])} training images, batch {BATCH}, lr {LR}, one epoch; mean loss: over the "
              f"batches before the first non-finite one")
        print(f"{'seed':>4} {'loop':8} {'first non-finite batch':>23} {'mean loss':>10} {'valid acc':>10} {'seconds':>8}")
        for seed in args.seeds:
            for name in args.loops:
                loop.seed_everything(seed)
                loaders = make_loaders(datasets, BATCH, chapter_train_transform(), splits=("train", "valid"))
                started = time.perf_counter()
                epoch = chapter_epoch if name == "chapter" else package_epoch
                first_bad, mean, valid_acc = epoch(loaders["train"], loaders["valid"], devices)
                print(f"{seed:>4} {name:8} {first_bad or '-':>23} {mean:>10.2f} {valid_acc:>10.3f} "
                      f"{time.perf_counter() - started:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
