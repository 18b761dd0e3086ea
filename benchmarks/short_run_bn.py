"""A short strong run's validation loss: is it the weights, or BatchNorm's running statistics?

    python -m gluon_cifar.train --data-dir DIR --recipe strong --epochs 1 --output-dir OUT
    .venv/bin/python benchmarks/short_run_bn.py OUT

Scores the run's exported model on its validation split (the reorganisation named in OUT/config.json)
two ways: as exported (the running statistics training left, as `train` validates), and with each
BatchNorm normalising by the validation batch's own statistics (training mode, nothing learned). A loss
far above the second is the running statistics' (moving averages over a few updates of fast-moving
weights), not the weights'. The PyTorch mirror of the same run: benchmarks/torch_short_run.py.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, npx  # noqa: E402

from gluon_cifar.data.loaders import load_datasets, make_loaders  # noqa: E402
from gluon_cifar.data.transforms import test_transform  # noqa: E402
from gluon_cifar.deploy.export import load_exported  # noqa: E402
from gluon_cifar.training.loop import evaluate  # noqa: E402


def evaluate_in_train_mode(net, loader):
    """Loss and accuracy with every BatchNorm using its batch's statistics (running ones not read)."""
    with autograd.train_mode():
        return evaluate(net, loader, [mx.cpu()], gluon.loss.SoftmaxCrossEntropyLoss())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="output folder of a finished training run with a validation split")
    args = parser.parse_args()
    npx.set_np()
    with open(os.path.join(args.run, "config.json")) as f:
        config = json.load(f)
    reorg = config["reorg_dir"] or os.path.join(config["data_dir"], "train_valid_test")
    datasets = load_datasets(reorg)
    loaders = make_loaders(datasets, config["batch_size"], test_transform(), splits=("train", "valid"))
    net, _ = load_exported(os.path.join(args.run, "model"), mx.cpu())
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    rows = {"as exported (running statistics)": evaluate(net, loaders["valid"], [mx.cpu()], loss),
            "batch statistics (training mode)": evaluate_in_train_mode(net, loaders["valid"])}
    print(f"{args.run}: {len(datasets['valid'])} validation images")
    for what, (valid_loss, valid_acc) in rows.items():
        print(f"  {what:<60} loss {valid_loss:9.3f}  acc {valid_acc:.3f}")


if __name__ == "__main__":
    main()
