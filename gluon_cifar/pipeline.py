"""One training run, the chapter's story: data (reorganise, load) -> loaders -> net -> fit -> outputs
(export, submission.csv, metrics). `gluon_cifar.train` parses the command line and calls `run`; this
module wires the stages (data, model, training, deploy) and is imported by no stage.
"""
import contextlib
import dataclasses
import logging
import os

from gluon_cifar.cli import log_to_stdout
from gluon_cifar.data.fingerprint import data_fingerprint
from gluon_cifar.data.loaders import load_datasets, make_run_loaders
from gluon_cifar.data.locations import check_data_folder, check_run_folders
from gluon_cifar.data.reorg import reorganised
from gluon_cifar.data.sources import demo_data_dir, demo_dir
from gluon_cifar.deploy.export import export_model, exported_files, load_weights
from gluon_cifar.deploy.interpret import interpret, write_interpretation
from gluon_cifar.deploy.predict import Inference, fused_applies, predict_folder, predict_folder_fast
from gluon_cifar.errors import InputError
from gluon_cifar.fs import read_json
from gluon_cifar.model import get_net
from gluon_cifar.settings import Run
from gluon_cifar.training.checkpoint import BEST_DIRNAME, CHECKPOINT_DIRNAME, check_finite, interrupted_message
from gluon_cifar.training.distributed import create_kvstore, default_kvstore, one_worker_at_a_time, rank_and_size
from gluon_cifar.training.loop import best_epoch, fit, seed_everything
from gluon_cifar.training.outputs import (CONFIG_FILENAME, VALIDATION_OUTPUTS, read_saved_config, record_config,
                                         use_output_dir)
from gluon_cifar.training.report import EpochReport, describe_run, plot_curves, write_metrics

log = logging.getLogger("gluon_cifar")


def write_outputs(output, net, history, classes, run):
    """Write the outputs of `run` (a Run) into `output` (an OutputDir): metrics, curves, the chosen epoch's
    export and submission.csv of `classes` names, each recorded in the folder's marker once complete, so
    `--resume` redoes what a stop cut."""
    config = run.config
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
        load_weights(net, os.path.join(run.checkpoint_dir, BEST_DIRNAME), classes)
    export_model(net, os.path.join(out, "model"), classes)
    finished("model-symbol.json", "model-0000.params", "model-classes.json")
    submission, test_dir = os.path.join(out, "submission.csv"), os.path.join(run.reorg_dir, "test", "unknown")
    if fused_applies(run.devices[0]):  # the export just written, fused: the same predictions, faster
        ids = predict_folder_fast(os.path.join(out, "model"), test_dir, submission, config.batch_size, tta=config.tta)
    else:
        ids = predict_folder(net, test_dir, classes, submission,
                             Inference(config.batch_size, run.devices[0], config.num_workers, config.tta))
    finished("submission.csv")
    valid = f", valid acc {history[chosen - 1]['valid_acc']:.3f}" if "valid_acc" in history[chosen - 1] else ""
    log.info("model of epoch %d (%s%s) exported as %s; wrote %s: %d predictions", chosen, config.export, valid,
             ", ".join(exported_files(os.path.join(out, "model")).values()), submission,
             len(ids))
    if "valid" not in run.splits:
        output.remove(VALIDATION_OUTPUTS, "an earlier run's, and this --final run has no validation split to show")
        log.info("--final: no validation split, so no %s", ", ".join(VALIDATION_OUTPUTS))
        return
    result = interpret(net, os.path.join(run.reorg_dir, "valid"), classes,
                       Inference(config.batch_size, run.devices[0], config.num_workers, config.tta))
    finished(*write_interpretation(result, out))
    log.info("what it gets wrong on the validation split: %s", ", ".join(os.path.join(out, name)
                                                                         for name in VALIDATION_OUTPUTS))


def check_same_job_size(out, config):
    """Refuse to resume a run with another number of workers: that changes the global batch, hence the run."""
    saved = read_saved_config(out) if config.resume else None
    if saved is not None and saved.get("job_workers", 1) != config.job_workers:
        raise InputError(f"--resume continues the run as it was started, on {saved.get('job_workers', 1)} worker(s); "
                         f"this job has {config.job_workers} (python -m gluon_cifar.launch -n)")


def run_training(config, argv):
    """Train as `config` (a RunConfig) says: this process's part of the run, the whole run outside a
    distributed job. `argv` is the command line, for the resume command a stop prints."""
    seed_everything(config.seed)  # the same on every worker: the same initial parameters
    if config.data_dir:  # (the demo set's folder may not be there yet)
        check_data_folder(config.data_dir)
    check_run_folders(config.data_dir or demo_dir(config.cache_dir), config.reorg_dir, config.output_dir)
    kvstore = create_kvstore(config.kvstore or default_kvstore(config.contexts()))
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


def resolved_run(config, kvstore, reorg_dir, checkpoint_dir, datasets):
    """The Run of `config` on the job of `kvstore` and the reorganisation `reorg_dir` (its `datasets`):
    the config with its kvstore, job workers and batch size set, once, and what the run derives."""
    rank, workers = rank_and_size(kvstore)
    batch_size, notice = config.batch_size_for(len(datasets["train"]), len(datasets["valid"]), demo=not config.data_dir)
    if notice:
        log.info(notice)
    kind = kvstore if isinstance(kvstore, str) else kvstore.type  # the kind run_training chose
    config = dataclasses.replace(config, kvstore=kind, job_workers=workers, batch_size=batch_size)
    return Run(config, kvstore=kvstore, rank=rank, workers=workers, reorg_dir=reorg_dir, checkpoint_dir=checkpoint_dir)


def run_stages(config, kvstore, output, checkpoint_dir):
    """data -> loaders -> net -> fit -> outputs, for one worker; `output` (an OutputDir) on rank 0 only.
    Rank 0 owns the output folder; on --resume every worker reads `checkpoint_dir` (a folder they all see)."""
    rank, workers = rank_and_size(kvstore)
    log_to_stdout(f"[rank {rank}] " if workers > 1 else "")

    # data -> loaders; the reorganisation stays in use (no other run rebuilds it) until this run ends
    saved = read_json(os.path.join(config.output_dir, CONFIG_FILENAME)) if config.resume else None
    recorded = saved.get("data") if isinstance(saved, dict) else None
    resumes = recorded if isinstance(recorded, dict) else None  # the data the run started on
    with contextlib.ExitStack() as in_use:
        with one_worker_at_a_time(kvstore, os.path.expanduser(config.cache_dir)):
            data_dir = config.data_dir or demo_data_dir(config.cache_dir, config.demo_source)
            reorg_dir = in_use.enter_context(reorganised(data_dir, config.valid_ratio, config.reorg_dir, resumes))
        datasets = load_datasets(reorg_dir)
        run = resolved_run(config, kvstore, reorg_dir, checkpoint_dir, datasets)
        config = run.config
        loaders = make_run_loaders(datasets, run)
        if output:
            check_same_job_size(output.path, config)
            record_config(output, config, data_fingerprint(reorg_dir))
            if config.resume and output.finished(config.epochs, validation=not config.final):
                log.info("%s: this run is finished (%d epoch(s), every output written): nothing to do", output.path,
                         config.epochs)
                return
            for line in describe_run(run, datasets, loaders):
                log.info(line)
        if rank == 0 and workers > 1:
            log.info("%s: %d workers x batch %d: learns as one process with --devices cpu:%d --batch-size %d "
                     "(the same rate, weight decay and schedule per update)", config.kvstore, workers,
                     config.batch_size, workers, workers * config.batch_size)

        # net -> fit
        classes = datasets[run.train_split].synsets
        net = get_net(run.devices, num_classes=len(classes))
        if config.init_from and not config.resume:  # a resumed run's checkpoint holds them already
            load_weights(net, config.init_from, classes)
        # Static memory and shapes: 1.37x the training throughput of a plain hybridize() on 2 cores (make bench).
        net.hybridize(static_alloc=True, static_shape=True)
        report = EpochReport(output.path, config.tensorboard) if output else None
        try:
            history = fit(net, loaders[run.train_split], loaders.get("valid"), run, len(classes), on_epoch_end=report)
        finally:
            if report:
                report.close()
        if output:
            write_outputs(output, net, history, classes, run)
