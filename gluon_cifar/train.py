"""`python -m gluon_cifar.train`: the chapter's story as one command.

This module only parses the command line into a RunConfig (gluon_cifar.settings) and calls
`gluon_cifar.pipeline.run_training`, which wires data -> loaders -> net -> fit -> outputs.
"""
if __name__ == "__main__":  # before MXNet loads: signals, the environment it reads, every core
    from gluon_cifar.cli import start_command
    start_command()

import sys

from mxnet import npx

from gluon_cifar.cli import ArgumentParser, check_mxnet_environment, log_to_stdout, report_input_errors
from gluon_cifar.data.sources import mirror_url
from gluon_cifar.pipeline import run_training
from gluon_cifar.settings import (AUGMENTATIONS, DEMO_SOURCES, EXPORTS, KVSTORES, RECIPES, SCHEDULES, TTA_MODES,
                                  RunConfig)

DEFAULTS = RunConfig()


def build_parser():
    parser = ArgumentParser(
        prog="python -m gluon_cifar.train",
        description="Train the chapter's ResNet-18 on a Kaggle-layout CIFAR-10 folder, export it and write "
                    "submission.csv. The defaults are the chapter's (d2l, \"Image Classification (CIFAR-10) "
                    "on Kaggle\", MXNet tab).")
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="Kaggle-layout folder (train/, test/, trainLabels.csv, or the "
                                         ".7z archives) (default: the demo set, see --demo-source)")
    data.add_argument("--cache-dir", default=DEFAULTS.cache_dir,
                      help="where the demo set is cached and the bundled sample unpacked")
    data.add_argument("--demo-source", choices=DEMO_SOURCES, default=DEFAULTS.demo_source,
                      help="without --data-dir: auto is d2l's demo set (cached, else downloaded), else the small "
                           "sample bundled with the package; download, only the demo set; bundled, only the sample")
    data.add_argument("--reorg-dir", help="where train_valid_test/ goes (default: inside --data-dir)")
    data.add_argument("--valid-ratio", type=float, default=DEFAULTS.valid_ratio,
                      help="fraction (0-1) of the rarest class's count held out of every class for validation")
    data.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                      help="images per batch (default: the chapter's 4 on the demo set, 128 on full data; "
                           "4 with a notice where 128 leaves no full batch)")
    data.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers,
                      help="DataLoader worker processes (0: load in the training process)")
    data.add_argument("--fast-data", action="store_true",
                      help="decode every image once and augment whole batches (gluon_cifar.fastdata): the "
                           "chapter's augmentation, about 19x the chapter's input pipeline (make bench)")
    optim = parser.add_argument_group("optimisation (the chapter's numbers: SGD, momentum 0.9)")
    optim.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the training split")
    optim.add_argument("--lr", type=float, default=DEFAULTS.lr, help="learning rate at the start")
    optim.add_argument("--wd", type=float, default=DEFAULTS.wd, help="weight decay (L2 coefficient)")
    optim.add_argument("--lr-period", type=int, default=DEFAULTS.lr_period,
                       help="epochs between learning-rate decays (step schedule)")
    optim.add_argument("--lr-decay", type=float, default=DEFAULTS.lr_decay,
                       help="factor the learning rate is multiplied by every --lr-period epochs")
    recipe = parser.add_argument_group(
        "recipe", "beyond the chapter (docs/recipes.md); --recipe presets these, explicit flags override it")
    recipe.add_argument("--recipe", choices=RECIPES, default=DEFAULTS.recipe,
                        help="strong: --augment padcrop --lr-schedule onecycle --lr 0.2 --label-smoothing 0.1 "
                             "--epochs 30 --tta flip")
    recipe.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULTS.augment,
                        help="chapter: resize 40 + random crop + flip; padcrop: reflect-pad 4 + random crop + flip")
    recipe.add_argument("--cutout", type=int, default=DEFAULTS.cutout,
                        help="side in pixels of a random square set to the mean pixel (padcrop only; 0: off)")
    recipe.add_argument("--lr-schedule", choices=SCHEDULES, default=DEFAULTS.lr_schedule,
                        help="step: the chapter's (--lr-period, --lr-decay); cosine or onecycle: decay from "
                             "--lr to 0")
    recipe.add_argument("--warmup-frac", type=float,
                        help="fraction (0-1) of all updates warming up linearly from 0 (default: 0.3 for "
                             "onecycle, else 0)")
    recipe.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing,
                        help="fraction (0-1) of each target spread over all classes; 0: off")
    recipe.add_argument("--mixup-alpha", type=float, default=DEFAULTS.mixup_alpha,
                        help="Beta(alpha, alpha) mixup; 0: off")
    recipe.add_argument("--tta", choices=TTA_MODES, default=DEFAULTS.tta,
                        help="test-time augmentation for submission.csv (flip: mean logits of image and mirror)")
    run = parser.add_argument_group("run")
    run.add_argument("--devices", help="cpu, cpu:N (N CPU contexts), gpu (all) or gpu:0,1 (default: every GPU, "
                                       "else cpu)")
    run.add_argument("--seed", type=int, default=DEFAULTS.seed, help="makes CPU runs repeatable")
    run.add_argument("--kvstore", choices=KVSTORES,
                     help="gradient reduction: local (on the CPU), device (on the GPUs), dist_sync or "
                          "dist_device_sync (many machines: start with gluon_cifar.launch, --batch-size is per "
                          "worker) (default: device with several GPUs, else local)")
    run.add_argument("--final", action="store_true",
                     help="the chapter's last step: train on train_valid (no validation) for the submission")
    out = parser.add_argument_group("outputs and the model you keep")
    out.add_argument("--output-dir", default=DEFAULTS.output_dir,
                     help="where the model, submission.csv, metrics, curves and checkpoints go")
    again = out.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --output-dir from its last checkpoint; with a larger --epochs, "
                            "extend a finished one (step schedule only)")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in an --output-dir that holds a previous run, replacing it")
    out.add_argument("--init-from", metavar="MODEL",
                     help="start from trained weights: an export prefix (OUT/model) or a checkpoint folder "
                          "(OUT/checkpoint/best) (default: Xavier initialisation)")
    out.add_argument("--export", choices=EXPORTS,
                     help="which epoch's weights to export and predict with: best (highest validation accuracy) "
                          "or last (default: best with a validation split, else last)")
    out.add_argument("--patience", type=int, default=DEFAULTS.patience,
                     help="stop after this many epochs without a better validation accuracy; 0: never")
    log_group = parser.add_argument_group("what the run says")
    log_group.add_argument("--log-every", type=int, default=DEFAULTS.log_every,
                           help="batches between progress lines when stderr is not a terminal (a log file, "
                                "nohup, CI; also at least one a minute); a terminal shows a progress bar")
    log_group.add_argument("--tensorboard", action="store_true",
                           help="also log each epoch to OUT/tensorboard (needs tensorboardX: the [tensorboard] "
                                "extra)")
    return parser


def parse_config(argv):
    """The RunConfig of a command line; the --recipe's settings are defaults that explicit flags override."""
    parser = build_parser()
    parser.set_defaults(**RECIPES[parser.parse_args(argv).recipe])
    return RunConfig(**vars(parser.parse_args(argv)))


@report_input_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    check_mxnet_environment()
    mirror_url()
    config = parse_config(argv)
    npx.set_np()
    log_to_stdout()  # the run's story; stderr carries only what went wrong (one line), so the two never mix
    run_training(config, argv)


if __name__ == "__main__":
    main()
