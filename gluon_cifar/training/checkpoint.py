"""Checkpoints and the output folder: a killed or interrupted run loses at most the epoch in progress.

After every epoch, `OUT/checkpoint/epoch-NNNN/` receives `net.params`, the optimizer's state as data only
(`optimizer.params`: the momentum arrays, in MXNet's array format; `optimizer.json`: the update counts,
hence the learning-rate schedule's position) and `history.json` (one entry per finished epoch). Nothing in
a checkpoint is a pickle: loading one runs no code from it. Older releases saved the optimizer as a pickle
(`trainer.states`); such a checkpoint is refused unread. The files are written into a hidden staging
folder that is renamed into place in one step, so a checkpoint folder is either complete or absent; older
epochs are then removed. Each epoch folder's manifest lists its files; only those are ever removed.
 The weights of the epoch with the best validation accuracy so far stay in `OUT/checkpoint/best/net.params`.
`OUT/config.json` holds the run's settings (gluon_cifar.config), which a resumed run must share.

The output folder is the package's own: `OUT/.gluon_cifar-run` marks it and lists the outputs the run
has finished writing (so `--resume` knows what is missing), and the run holds a lock on
`OUT/.gluon_cifar-run.lock` while it uses the folder. A folder the package did not make is used only when
empty; `--overwrite` and `--resume` replace or remove only the files the folder's manifests list
(gluon_cifar.fs), checked before anything changes.

Random state: MXNet cannot export its generator state, so instead every epoch starts from MXNet's,
NumPy's (DataLoader shuffling) and Python's (random crops) generators seeded by `epoch_seed(seed,
epoch)`; the epoch number in a checkpoint therefore fixes the random stream of the rest of the run.
"""
import json
import logging
import os
import re
import shlex
import sys

import mxnet as mx
import numpy as onp
from mxnet.base import MXNetError

from gluon_cifar import fs
from gluon_cifar.errors import InputError, reason
from gluon_cifar.fs import atomic_path, read_json, write_error, write_json
from gluon_cifar.model import initialize_shapes

CHECKPOINT_DIRNAME = "checkpoint"
OPTIMIZER_ARRAYS, OPTIMIZER_COUNTERS = "optimizer.params", "optimizer.json"
CHECKPOINT_FILES = ("net.params", OPTIMIZER_ARRAYS, OPTIMIZER_COUNTERS, "history.json")
PICKLED_STATES = "trainer.states"  # older releases' optimizer state, a pickle: never read, removed by --overwrite
BEST_DIRNAME = "best"
EPOCH_DIR = re.compile(r"epoch-(\d+)")
log = logging.getLogger("gluon_cifar")


def epoch_seed(seed, epoch):
    """A 32-bit seed for `epoch` of a run seeded with `seed` (independent streams per epoch)."""
    return int(onp.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def latest_checkpoint(folder):
    """The newest complete `epoch-NNNN` folder under `folder`, or None."""
    if not folder or not os.path.isdir(folder):
        return None
    epochs = [int(m.group(1)) for m in map(EPOCH_DIR.fullmatch, os.listdir(folder)) if m]
    return os.path.join(folder, f"epoch-{max(epochs):04d}") if epochs else None


def check_finite(net, epoch):
    """Refuse weights that are no longer finite (a diverged run) before they reach a checkpoint or an export."""
    if not all(onp.isfinite(p.data().asnumpy()).all() for p in net.collect_params().values()):
        raise InputError(f"epoch {epoch}: the weights are no longer finite: training diverged; lower --lr; "
                         "the last checkpoint and model are kept")


def save_checkpoint(folder, net, trainer, history):
    """Save parameters, trainer state and history after epoch `len(history)`, as one atomic step.

    Weights that are no longer finite (a diverged run) are refused: the last good checkpoint stays.
    """
    final = os.path.join(folder, f"epoch-{len(history):04d}")
    check_finite(net, len(history))
    try:
        os.makedirs(folder, exist_ok=True)
        staging = fs.staging_dir(final, marker=False)
    except OSError as err:
        raise write_error(final, err) from None
    manifest = fs.Manifest(staging)
    try:
        written = [os.path.join(staging, name) for name in CHECKPOINT_FILES[:3]]  # by MXNet and save_optimizer_state
        manifest.expect(*written)
        net.save_parameters(written[0])
        save_optimizer_state(staging, trainer)
        for path in written:
            manifest.record(path)
        write_json(os.path.join(staging, "history.json"), history, manifest)
        older = [os.path.join(folder, name) for name in os.listdir(folder) if EPOCH_DIR.fullmatch(name)]
        remove_epochs([path for path in older if path == final], "a checkpoint of this epoch is saved")
        fs.rename_into_place(staging, final)
    except (OSError, MXNetError) as err:
        fs.record_tree(staging, manifest)  # what this save wrote into its new folder
        fs.remove_owned([staging], manifest, "the staging folder of a failed save")
        raise write_error(final, err) from None
    remove_epochs([path for path in older if path != final], "older checkpoints are removed")


def remove_epochs(paths, purpose):
    """Remove checkpoint folders, each by its own manifest: all of them, or none when one holds anything else."""
    for path in paths:
        if os.path.islink(path) or not os.path.isdir(path):
            raise InputError(f"{path} is not a checkpoint a run made (a link or a file): move it")
    for path in paths:
        fs.check_owned([path], fs.Manifest(path), purpose)
    for path in paths:
        fs.remove_owned([path], fs.Manifest(path), purpose)


def read_history(path):
    """The per-epoch history of the checkpoint folder `path` (a list of one dict per epoch, 1, 2, ...)."""
    file = os.path.join(path, "history.json")
    try:
        with open(file) as f:
            history = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{file}: missing from the checkpoint; --overwrite starts the run afresh") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{file}: not valid JSON ({reason(err)}); --overwrite starts the run afresh") from None
    epoch = int(EPOCH_DIR.fullmatch(os.path.basename(path)).group(1))
    if (not isinstance(history, list) or len(history) != epoch
            or any(not isinstance(h, dict) or h.get("epoch") != i for i, h in enumerate(history, start=1))):
        raise InputError(f"{file}: not the history of {epoch} epoch(s) (one entry per epoch, numbered from 1); "
                         "--overwrite starts the run afresh")
    return history


def save_optimizer_state(folder, trainer):
    """Write `trainer`'s optimizer state into `folder` as data: its per-parameter states (SGD's momentum)
    as arrays in `optimizer.params` (MXNet's `nd.save`), its update counts in `optimizer.json`.

    The states are those of the Trainer's updaters (update_on_kvstore=False: gluon_cifar.distributed); the
    counts position the learning-rate schedule, which is rebuilt from the run's settings on resume.
    """
    arrays, layout = {}, {}  # layout: per parameter, None, "array" or a list of those (a tuple of states)
    for index, state in trainer._updaters[0].states.items():
        parts = list(state) if isinstance(state, (tuple, list)) else [state]
        arrays.update({f"{index}.{j}": part for j, part in enumerate(parts) if part is not None})
        kinds = [None if part is None else "array" for part in parts]
        layout[str(index)] = kinds if isinstance(state, (tuple, list)) else kinds[0]
    optimizer = trainer._optimizer
    counts = optimizer._all_index_update_counts.get(trainer._contexts[0].device_id, {})
    mx.nd.save(os.path.join(folder, OPTIMIZER_ARRAYS), arrays)
    with open(os.path.join(folder, OPTIMIZER_COUNTERS), "w") as f:
        json.dump({"num_update": optimizer.num_update, "update_counts": {str(i): n for i, n in counts.items()},
                   "states": layout}, f, indent=1)


def load_optimizer_state(folder, trainer):
    """Restore the state `save_optimizer_state` wrote into `trainer`, after checking that it fits the
    trainer's parameters. Only MXNet's array format and JSON are read: no code runs."""
    arrays_file, counters_file = os.path.join(folder, OPTIMIZER_ARRAYS), os.path.join(folder, OPTIMIZER_COUNTERS)
    params = trainer._params  # the states are numbered in this order, which MXNet keeps only here

    def refuse(path, why):
        return InputError(f"{path}: not the optimizer state of this model ({why}); --overwrite starts the run "
                          "afresh")
    try:
        counters = read_json(counters_file)
        num_update = int(counters["num_update"])
        counts = {int(i): int(n) for i, n in counters["update_counts"].items()}
        layout = {int(i): kinds for i, kinds in counters["states"].items()}
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise refuse(counters_file, "not valid JSON" if counters is None else reason(err)) from None
    if any(not 0 <= index < len(params) for index in layout):
        raise refuse(counters_file, f"states of parameters beyond this model's {len(params)}")
    try:
        arrays = mx.nd.load(arrays_file)
    except MXNetError as err:
        raise refuse(arrays_file, reason(err)) from None
    if not isinstance(arrays, dict):
        raise refuse(arrays_file, "unnamed arrays")
    states = {}
    for index, kinds in layout.items():
        parts = []
        for j, kind in enumerate(kinds if isinstance(kinds, list) else [kinds]):
            array = arrays.get(f"{index}.{j}") if kind == "array" else None
            if kind is not None and array is None:
                raise refuse(arrays_file, f"optimizer state {index} is missing")
            if array is not None and tuple(array.shape) != params[index].shape:
                raise InputError(f"{arrays_file}: optimizer state {index} is {tuple(array.shape)}, but parameter "
                                 f"{params[index].name} is {params[index].shape} (another model's checkpoint?); "
                                 "--overwrite starts the run afresh")
            parts.append(array)
        states[index] = tuple(parts) if isinstance(kinds, list) else parts[0]
    optimizer = trainer._optimizer
    optimizer.num_update = num_update
    optimizer._all_index_update_counts = {ctx.device_id: dict(counts) for ctx in trainer._contexts}
    optimizer._index_update_count = optimizer._all_index_update_counts[trainer._contexts[0].device_id]
    for updater in trainer._updaters:  # one per device; each moves its copy to its device at its first step
        updater.states = {index: _copy_state(state) for index, state in states.items()}
        updater.states_synced = dict.fromkeys(updater.states, False)


def _copy_state(state):
    if isinstance(state, tuple):
        return tuple(map(_copy_state, state))
    return None if state is None else state.copy()


def refuse_pickled_checkpoint(path, out):
    """Refuse a checkpoint folder of an older release, whose optimizer state is a pickle, without reading it."""
    pickled = os.path.join(path, PICKLED_STATES)
    if os.path.lexists(pickled):
        raise InputError(f"{pickled}: a checkpoint of an older gluon_cifar, whose optimizer state is a Python "
                         "pickle, which could run code when read: it is not read. Start afresh with --overwrite, "
                         f"or from the run's exported model with --init-from {os.path.join(out, 'model')} and a "
                         "new --output-dir")


def save_best(folder, net):
    """Keep `net`'s weights as the run's best so far, in `folder/best/net.params` (written atomically).
    Which epoch that is, `history.json` of the checkpoint says (loop.best_epoch)."""
    manifest = fs.Manifest(folder)
    fs.make_dirs(os.path.join(folder, BEST_DIRNAME), manifest)
    with atomic_path(best_params(folder), manifest) as tmp:
        net.save_parameters(tmp)  # the devices' average, as the export


def best_params(folder):
    return os.path.join(folder, BEST_DIRNAME, "net.params")


def load_checkpoint(folder, net, trainer):
    """Restore the newest checkpoint of `folder` into `net` and `trainer`; return its history.

    A missing, damaged or mismatched file is refused with one line naming it.
    """
    path = latest_checkpoint(folder)
    if path is None:
        raise InputError(f"{folder}: no checkpoint to resume from")
    refuse_pickled_checkpoint(path, os.path.dirname(folder))
    for name in CHECKPOINT_FILES:
        if not os.path.isfile(os.path.join(path, name)):
            raise InputError(f"{os.path.join(path, name)}: missing from the checkpoint; "
                             "--overwrite starts the run afresh")
    history = read_history(path)
    params_file = os.path.join(path, "net.params")
    devices = next(iter(net.collect_params().values())).list_ctx()
    if any(size <= 0 for p in net.collect_params().values() for size in p.shape):
        # Trace the graph while the shapes are still unknown, as a fresh run's first batch does: the export
        # is then the uninterrupted run's, byte for byte (inference mode: the weights are replaced next).
        initialize_shapes(net)
    try:
        net.load_parameters(params_file, ctx=devices)
    except (MXNetError, UnicodeDecodeError, AssertionError, ValueError, KeyError) as err:
        what = ("not an MXNet parameter file (truncated or damaged?)" if "NDArray file format" in str(err)
                else f"does not fit this model ({reason(err)})")
        raise InputError(f"{params_file}: {what}; --overwrite starts the run afresh") from None
    load_optimizer_state(path, trainer)
    log.info("resuming from %s: %d epoch(s) done", path, len(history))
    return history


# The output folder


def check_resumable(checkpoint_dir, epochs):
    """Refuse to resume the checkpoint of `checkpoint_dir` to `epochs` epochs: a pickled one (an older
    release's) or one that has done more epochs already."""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        raise InputError(f"{checkpoint_dir}: no checkpoint to resume from")
    refuse_pickled_checkpoint(path, os.path.dirname(checkpoint_dir))
    done = len(read_history(path))
    if done > epochs:
        raise InputError(f"--epochs {epochs}: the run in {os.path.dirname(checkpoint_dir)} has done {done} "
                         f"epochs already; pass --epochs {done} or more to continue it")


def interrupted_message(checkpoint_dir, argv):
    """What an interrupted run tells the user: what was kept and the command that resumes it."""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return "stopped before the first epoch finished; no checkpoint to resume from: run the command again"
    argv = [a for a in argv if a not in ("--resume", "--overwrite")] + ["--resume"]
    return (f"stopped; the last complete checkpoint is kept ({path}). "
            f"Resume with: {shlex.join([sys.executable, '-m', 'gluon_cifar.train', *argv])}")
