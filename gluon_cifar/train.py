"""`python -m gluon_cifar.train`: the chapter's story as one command.

data (reorganise, load) -> loaders -> net (get_net) -> fit -> outputs (export, submission.csv, metrics).
This module only parses the command line and wires the stages; the loop lives in `gluon_cifar.loop`.
"""
if __name__ == "__main__":  # before MXNet loads: signals, the environment it reads, every core
    from gluon_cifar.runtime import start_command
    start_command()

import contextlib
import dataclasses
import logging
import os
import sys

from mxnet import npx

from .fs import read_json
from .checkpoint import (BEST_DIRNAME, CHECKPOINT_DIRNAME, CONFIG_FILENAME, check_finite, interrupted_message,
                         read_saved_config, record_config, use_output_dir)
from .config import EXPORTS, RunConfig
from .data import (AUGMENTATIONS, DEMO_SOURCES, check_data_folder, check_run_folders, data_fingerprint, demo_data_dir,
                   demo_dir, load_datasets, make_run_loaders, mirror_url, reorganised)
from .distributed import KVSTORES, create_kvstore, default_kvstore, one_worker_at_a_time, rank_and_size
from .errors import ArgumentParser, InputError, report_input_errors
from .export import export_model, exported_files, load_weights
from .loop import best_epoch, fit, seed_everything
from .model import get_net
from .predict import fused_applies, predict_folder, predict_folder_fast
from .recipes import RECIPES, SCHEDULES, TTA_MODES
from .report import EpochReport, describe_run, plot_curves, write_metrics
from .runtime import check_mxnet_environment, log_to_stdout

log = logging.getLogger("gluon_cifar")
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


def write_outputs(output, net, history, classes, test_dir, config, device, checkpoint_dir):
    """Write the run's outputs into `output` (an OutputDir): metrics, curves, the chosen epoch's export and
    submission.csv, each recorded in the folder's marker once complete, so `--resume` redoes what a stop cut."""
    check_finite(net, len(history))
    out, done = output.path, []
    output.set_written(done)  # from here until each is rewritten, what is there is an earlier run's

    def finished(*names):
        done.extend(names)
        output.set_written(done)

    write_metrics(history, out)
    finished("metrics.csv", "metrics.json")
    plot_curves(history, os.path.join(out, "curves.png"))
    finished("curves.png")
    chosen = best_epoch(history) if config.export == "best" else None
    chosen = chosen or history[-1]["epoch"]
    if chosen != history[-1]["epoch"]:
        load_weights(net, os.path.join(checkpoint_dir, BEST_DIRNAME), classes)
    export_model(net, os.path.join(out, "model"), classes)
    finished("model-symbol.json", "model-0000.params", "model-classes.json")
    submission = os.path.join(out, "submission.csv")
    if fused_applies(device):  # the export just written, fused: the same predictions, faster
        ids = predict_folder_fast(os.path.join(out, "model"), test_dir, submission, config.batch_size, tta=config.tta)
    else:
        ids = predict_folder(net, test_dir, classes, submission, config.batch_size, device, config.num_workers,
                             config.tta)
    finished("submission.csv")
    valid = f", valid acc {history[chosen - 1]['valid_acc']:.3f}" if "valid_acc" in history[chosen - 1] else ""
    log.info("model of epoch %d (%s%s) exported as %s; wrote %s: %d predictions", chosen, config.export, valid,
             ", ".join(exported_files(os.path.join(out, "model")).values()), submission,
             len(ids))


def check_same_job_size(out, config):
    """Refuse to resume a run with another number of workers: that changes the global batch, hence the run."""
    saved = read_saved_config(out) if config.resume else None
    if saved is not None and saved.get("job_workers", 1) != config.job_workers:
        raise InputError(f"--resume continues the run as it was started, on {saved.get('job_workers', 1)} worker(s); "
                         f"this job has {config.job_workers} (python -m gluon_cifar.launch -n)")


@report_input_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    check_mxnet_environment()
    mirror_url()
    config = parse_config(argv)
    npx.set_np()
    log_to_stdout()  # the run's story; stderr carries only what went wrong (one line), so the two never mix
    seed_everything(config.seed)  # the same on every worker: the same initial parameters
    config = dataclasses.replace(config, kvstore=config.kvstore or default_kvstore(config.contexts()))
    if config.data_dir:  # (the demo set's folder may not be there yet)
        check_data_folder(config.data_dir)
    check_run_folders(config.data_dir or demo_dir(config.cache_dir), config.reorg_dir, config.output_dir)
    kvstore = create_kvstore(config.kvstore)
    if rank_and_size(kvstore)[0] != 0:
        return run(config, argv, kvstore, output=None)  # rank 0 writes the job's outputs
    with use_output_dir(config.output_dir, config.resume, config.overwrite) as output:  # locked while in use
        run(config, argv, kvstore, output)


def run(config, argv, kvstore, output):
    """`run_stages`, saying on a stop (Ctrl-C, SIGTERM) whatever the stage what was kept and the command
    that resumes it; in a job, the launcher says it."""
    checkpoint_dir = output.checkpoints if output else os.path.join(config.output_dir, CHECKPOINT_DIRNAME)
    try:
        run_stages(config, kvstore, output, checkpoint_dir)
    except KeyboardInterrupt as stop:
        alone = rank_and_size(kvstore)[1] == 1
        raise type(stop)(interrupted_message(checkpoint_dir, argv) if alone else "stopped with the job") from None


def run_stages(config, kvstore, output, checkpoint_dir):
    """data -> loaders -> net -> fit -> outputs, for one worker; `output` (an OutputDir) on rank 0 only.
    Rank 0 owns the output folder; on --resume every worker reads `checkpoint_dir` (a folder they all see)."""
    devices = config.contexts()
    rank, workers = rank_and_size(kvstore)
    log_to_stdout(f"[rank {rank}] " if workers > 1 else "")
    config = dataclasses.replace(config, job_workers=workers)

    # data -> loaders; the reorganisation stays in use (no other run rebuilds it) until this run ends
    saved = read_json(os.path.join(config.output_dir, CONFIG_FILENAME)) if config.resume else None
    recorded = saved.get("data") if isinstance(saved, dict) else None
    resumes = recorded if isinstance(recorded, dict) else None  # the data the run started on
    with contextlib.ExitStack() as in_use:
        with one_worker_at_a_time(kvstore, os.path.expanduser(config.cache_dir)):
            data_dir = config.data_dir or demo_data_dir(config.cache_dir, config.demo_source)
            reorg_dir = in_use.enter_context(reorganised(data_dir, config.valid_ratio, config.reorg_dir, resumes))
        datasets = load_datasets(reorg_dir)
        config, notice = config.for_data(len(datasets["train"]), len(datasets["valid"]), demo=not config.data_dir)
        if notice:
            log.info(notice)
        train_split = "train_valid" if config.final else "train"
        splits = (train_split,) if config.final else (train_split, "valid")
        loaders = make_run_loaders(reorg_dir, datasets, splits, config.batch_size, config.augment, config.cutout,
                                   config.num_workers, config.fast_data, rank, workers)
        if output:
            check_same_job_size(output.path, config)
            record_config(output, config, data_fingerprint(reorg_dir))
            if config.resume and output.finished(config.epochs):
                log.info("%s: this run is finished (%d epoch(s), every output written): nothing to do", output.path,
                         config.epochs)
                return
            for line in describe_run(config, datasets, loaders, train_split, reorg_dir, devices, workers):
                log.info(line)
        if rank == 0 and workers > 1:
            log.info("%s: %d workers x batch %d: learns as one process with --devices cpu:%d --batch-size %d "
                     "(the same rate, weight decay and schedule per update)", config.kvstore, workers,
                     config.batch_size, workers, workers * config.batch_size)

        # net -> fit
        classes = datasets[train_split].synsets
        net = get_net(devices, num_classes=len(classes))
        if config.init_from and not config.resume:  # a resumed run's checkpoint holds them already
            load_weights(net, config.init_from, classes)
        # Static memory and shapes: 1.37x the training throughput of a plain hybridize() on 2 cores (make bench).
        net.hybridize(static_alloc=True, static_shape=True)
        report = EpochReport(output.path, config.tensorboard) if output else None
        try:
            history = fit(net, loaders[train_split], loaders.get("valid"), config, len(classes), kvstore,
                          checkpoint_dir, on_epoch_end=report)
        finally:
            if report:
                report.close()
        if output:
            write_outputs(output, net, history, classes, os.path.join(reorg_dir, "test", "unknown"), config,
                          devices[0], checkpoint_dir)


if __name__ == "__main__":
    main()
