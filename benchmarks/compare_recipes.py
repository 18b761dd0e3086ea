"""Training recipes side by side at small scale on real CIFAR-10 images: held-out accuracy per recipe, over seeds.

    .venv/bin/python benchmarks/compare_recipes.py [--data-dir ../shared/data/cifar-10] [--subset 4000]
        [--valid-ratio 0.25] [--epochs 4] [--seeds 0 1] [--model resnet20] [--output recipes.json]

The rows are those of the recipes table in docs/recipes.md, resolved by the training command's own parser (presets, then
explicit flags): the chapter's recipe; the chapter's augmentation with one-cycle (peak 0.2) and label
smoothing 0.1; and `--recipe strong` (pad-4 crop instead). Every row trains a fresh net with the
package's `train()` on the same training split for the same `--epochs` (the presets' epoch counts are
overridden) and scores the same held-out split through `predict`, plainly and with flip TTA.

The first `--subset` labelled images (ids 1..N) are unpacked from `train.7z` (or linked from an unpacked
Kaggle-layout folder such as cifar10_tiny) into a temporary folder; `--data-dir` is only read.
`--model resnet20` is GluonCV's `cifar_resnet20_v1` layout (3 stages of 3 blocks, 16/32/64 channels)
built from the chapter's `Residual` blocks, ~14x cheaper than ResNet-18 (GluonCV's own zoo model uses
legacy operators that reject the NumPy-mode arrays this package runs on); `resnet18` is the chapter's.
"""
import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

from gluon_cifar.cli import use_all_cores

use_all_cores()  # before MXNet loads

import mxnet as mx  # noqa: E402
from mxnet import init, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

import gluon_cifar  # noqa: E402
from gluon_cifar import train
from gluon_cifar.training import loop, recipes
from gluon_cifar.settings import Run
from gluon_cifar.model import resnet18, resnet_block  # noqa: E402
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import make_train_transform
from gluon_cifar.deploy import predict as deploy_predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {  # the recipes table of docs/recipes.md, as command-line flags of `python -m gluon_cifar.train`
    "chapter": ["--recipe", "chapter"],
    "chapter aug + onecycle 0.2 + ls 0.1": ["--lr-schedule", "onecycle", "--lr", "0.2", "--label-smoothing", "0.1"],
    "strong (padcrop + onecycle 0.2 + ls 0.1)": ["--recipe", "strong"],
}


def resnet20(num_classes):
    """GluonCV's cifar_resnet20_v1 layout from the chapter's Residual blocks (1x1-convolution shortcuts)."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(16, kernel_size=3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            resnet_block(16, 3, first_block=True), resnet_block(32, 3), resnet_block(64, 3),
            nn.GlobalAvgPool2D(), nn.Dense(num_classes))
    return net


MODELS = {"resnet20": resnet20, "resnet18": resnet18}


def prepare_subset(data_dir, subset, workdir):
    """A Kaggle-layout folder in `workdir` with the first `subset` labelled images of `data_dir`."""
    labels = read_csv_labels(os.path.join(data_dir, "trainLabels.csv"))
    ids = sorted(labels, key=int)[:subset]
    source = data_dir
    if not os.path.isdir(os.path.join(data_dir, "train")):
        import py7zr
        source = os.path.join(workdir, "unpacked")
        with py7zr.SevenZipFile(os.path.join(data_dir, "train.7z")) as z:
            z.extract(path=source, targets=[f"train/{i}.png" for i in ids])
    kaggle = os.path.join(workdir, "kaggle")
    for folder in ("train", "test"):
        os.makedirs(os.path.join(kaggle, folder))
    for i in ids:
        os.symlink(os.path.abspath(os.path.join(source, "train", f"{i}.png")),
                   os.path.join(kaggle, "train", f"{i}.png"))
    os.symlink(os.path.abspath(os.path.join(source, "train", f"{ids[0]}.png")),  # reorg wants a test/;
               os.path.join(kaggle, "test", "1.png"))                              # nothing reads it here
    with open(os.path.join(kaggle, "trainLabels.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{i},{labels[i]}\n" for i in ids))
    return kaggle


def held_out_accuracy(net, dataset, batch_size, ctx, tta):
    """Accuracy over every image of an (image, label) dataset, through `predict` (labels in place of ids)."""
    labels, preds = deploy_predict.predict(net, dataset, deploy_predict.Inference(batch_size, ctx, tta=tta))
    return sum(int(l == p) for l, p in zip(labels, preds)) / len(labels)


def run_recipe(flags, seed, datasets, model, devices):
    """Train a fresh `model` with the recipe `flags` and seed; return its config, time and accuracies."""
    args = train.parse_config(flags + ["--seed", str(seed)])
    loop.seed_everything(seed)
    loaders = make_loaders(datasets, args.batch_size, make_train_transform(args.augment, args.cutout))
    num_classes = len(datasets["train"].synsets)
    net = MODELS[model](num_classes)
    net.initialize(init.Xavier(), ctx=devices)
    net.hybridize()
    start = time.perf_counter()
    history = loop.fit(net, loaders["train"], None, Run(args), num_classes)
    train_seconds = time.perf_counter() - start
    accuracy = {tta: held_out_accuracy(net, datasets["valid"], args.batch_size, devices[0], tta)
                for tta in recipes.TTA_MODES}
    resolved = {k: getattr(args, k) for k in ("augment", "cutout", "lr_schedule", "lr", "warmup_frac",
                                              "label_smoothing", "mixup_alpha", "epochs", "batch_size", "wd")}
    return {"seed": seed, "config": resolved, "train_seconds": train_seconds,
            "final_train_loss": history[-1]["train_loss"], "valid_acc": accuracy["none"],
            "valid_acc_flip_tta": accuracy["flip"]}


def spread(values):
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def main():
    npx.set_np()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data", "cifar-10"),
                        help="trainLabels.csv beside train.7z or an unpacked train/ (only read)")
    parser.add_argument("--subset", type=int, default=4000, help="first N labelled images used")
    parser.add_argument("--valid-ratio", type=float, default=0.25, help="held out per class, as the package splits")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model", choices=MODELS, default="resnet20")
    parser.add_argument("--output", help="also write the results as JSON here")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    devices = [mx.cpu()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compare_recipes.") as workdir:
        kaggle = prepare_subset(opts.data_dir, opts.subset, workdir)
        datasets = load_datasets(reorg_cifar10_data(kaggle, opts.valid_ratio))
        sizes = {split: len(datasets[split]) for split in ("train", "valid")}
        logging.info("subset of %d images: %d train, %d held out", opts.subset, sizes["train"], sizes["valid"])
        runs = {}
        for name, flags in ROWS.items():
            for seed in opts.seeds:
                result = run_recipe(flags + ["--epochs", str(opts.epochs), "--batch-size", str(opts.batch_size)],
                                    seed, datasets, opts.model, devices)
                runs.setdefault(name, []).append(result)
                logging.info("%s, seed %d: valid acc %.4f, with flip TTA %.4f (%.0f s training)", name, seed,
                             result["valid_acc"], result["valid_acc_flip_tta"], result["train_seconds"])
    summary = {name: {key: spread([r[key] for r in results]) for key in ("valid_acc", "valid_acc_flip_tta")}
               for name, results in runs.items()}
    report = {"command": " ".join([os.path.relpath(sys.executable, REPO), *sys.argv]),
              "options": vars(opts), "sizes": sizes, "summary": summary, "runs": runs,
              "wall_seconds": time.perf_counter() - started,
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "mxnet": mx.__version__, "gluon_cifar": gluon_cifar.__version__,
                          "python": platform.python_version()}}
    print(f"\n{opts.model}, {sizes['train']} train / {sizes['valid']} held-out images, {opts.epochs} epochs, "
          f"seeds {opts.seeds}; held-out accuracy, mean +- std (min-max) over seeds\n")
    print("| recipe | valid acc | with flip TTA |\n| --- | --- | --- |")
    for name, stats in summary.items():
        cells = [f"{s['mean']:.3f} +- {s['std']:.3f} ({s['min']:.3f}-{s['max']:.3f})"
                 for s in (stats["valid_acc"], stats["valid_acc_flip_tta"])]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\nwall time {report['wall_seconds']:.0f} s")
    if opts.output:
        with open(opts.output, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
