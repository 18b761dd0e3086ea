"""Checkpoints and the output folder: a killed or interrupted run loses at most the epoch in progress.

After every epoch, `OUT/checkpoint/epoch-NNNN/` receives `net.params`, the optimizer's state as data only
(`optimizer.params`: the momentum arrays, in MXNet's array format; `optimizer.json`: the update counts,
hence the learning-rate schedule's position) and `history.json` (one entry per finished epoch). Nothing in
a checkpoint is a pickle: loading one runs no code from it. Older releases saved the optimizer as a pickle
(`trainer.states`); such a checkpoint is refused unread. The files are written into a hidden staging
folder that is renamed into place in one step, so a checkpoint folder is either complete or absent; older
epochs are then removed. The weights of the epoch with the best validation accuracy so far stay in `OUT/checkpoint/best/net.params`.
`OUT/config.json` holds the run's settings (gluon_cifar.config), which a resumed run must share.

The output folder is the package's own: `OUT/.gluon_cifar-run` marks it and lists the outputs the run
has finished writing (so `--resume` knows what is missing), and the run holds a lock on
`OUT/.gluon_cifar-run.lock` while it uses the folder. A folder the package did not make is used only when
empty; `--overwrite` removes only the files a run writes.

Random state: MXNet cannot export its generator state, so instead every epoch starts from MXNet's,
NumPy's (DataLoader shuffling) and Python's (random crops) generators seeded by `epoch_seed(seed,
epoch)`; the epoch number in a checkpoint therefore fixes the random stream of the rest of the run.
"""
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import sys
import tempfile

import mxnet as mx
import numpy as onp
from mxnet.base import MXNetError

from .atomic import atomic_path, read_json, remove_stale_staging, write_error, write_json
from .config import resume_conflict
from .errors import InputError
from .images import INPUT_SHAPE

CHECKPOINT_DIRNAME = "checkpoint"
OPTIMIZER_ARRAYS, OPTIMIZER_COUNTERS = "optimizer.params", "optimizer.json"
CHECKPOINT_FILES = ("net.params", OPTIMIZER_ARRAYS, OPTIMIZER_COUNTERS, "history.json")
PICKLED_STATES = "trainer.states"  # older releases' optimizer state, a pickle: never read, removed by --overwrite
CONFIG_FILENAME = "config.json"
# what a finished run leaves in its folder, beside config.json and checkpoint/
OUTPUT_FILES = ("metrics.csv", "metrics.json", "curves.png", "model-symbol.json", "model-0000.params",
                "model-classes.json", "submission.csv")
RUN_MARKER = ".gluon_cifar-run"
LOCK_FILE = RUN_MARKER + ".lock"
BEST_DIRNAME = "best"
_EPOCH_DIR = re.compile(r"epoch-(\d+)")
_STAGING_DIR = re.compile(r"\.epoch-\d+\.partial")  # a checkpoint being saved
log = logging.getLogger("gluon_cifar")


def epoch_seed(seed, epoch):
    """A 32-bit seed for `epoch` of a run seeded with `seed` (independent streams per epoch)."""
    return int(onp.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def latest_checkpoint(folder):
    """The newest complete `epoch-NNNN` folder under `folder`, or None."""
    if not folder or not os.path.isdir(folder):
        return None
    epochs = [int(m.group(1)) for m in map(_EPOCH_DIR.fullmatch, os.listdir(folder)) if m]
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
    staging = os.path.join(folder, f".epoch-{len(history):04d}.partial")
    try:
        remove_checkpoint_folder(staging)
        os.makedirs(staging)
        net.save_parameters(os.path.join(staging, "net.params"))
        save_optimizer_state(staging, trainer)
        with open(os.path.join(staging, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        remove_checkpoint_folder(final)
        os.rename(staging, final)
    except (OSError, MXNetError) as err:
        remove_checkpoint_folder(staging)
        raise write_error(final, err) from None
    for name in os.listdir(folder):  # older epochs and staging folders of interrupted saves
        if (_EPOCH_DIR.fullmatch(name) or _STAGING_DIR.fullmatch(name)) and name != os.path.basename(final):
            remove_checkpoint_folder(os.path.join(folder, name))


def remove_checkpoint_folder(path):
    """Remove the files a checkpoint holds, then the folder, unless something else is in it (not ours).
    A link or a file under a checkpoint's name is not a folder a run made: left alone."""
    if os.path.islink(path) or not os.path.isdir(path):
        return
    for name in CHECKPOINT_FILES + (PICKLED_STATES,):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, name))
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(path)


def _reason(err):
    """The last line of an MXNet or Python error, without MXNet's traceback and prefixes."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    return lines[-1].split("MXNetError: ")[-1]


def read_history(path):
    """The per-epoch history of the checkpoint folder `path` (a list of one dict per epoch, 1, 2, ...)."""
    file = os.path.join(path, "history.json")
    try:
        with open(file) as f:
            history = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{file}: missing from the checkpoint; --overwrite starts the run afresh") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{file}: not valid JSON ({_reason(err)}); --overwrite starts the run afresh") from None
    epoch = int(_EPOCH_DIR.fullmatch(os.path.basename(path)).group(1))
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
        raise refuse(counters_file, "not valid JSON" if counters is None else _reason(err)) from None
    if any(not 0 <= index < len(params) for index in layout):
        raise refuse(counters_file, f"states of parameters beyond this model's {len(params)}")
    try:
        arrays = mx.nd.load(arrays_file)
    except MXNetError as err:
        raise refuse(arrays_file, _reason(err)) from None
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
    os.makedirs(os.path.join(folder, BEST_DIRNAME), exist_ok=True)
    with atomic_path(best_params(folder)) as tmp:
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
        net(mx.np.zeros((1,) + INPUT_SHAPE, ctx=devices[0]))
    try:
        net.load_parameters(params_file, ctx=devices)
    except (MXNetError, UnicodeDecodeError, AssertionError, ValueError, KeyError) as err:
        what = ("not an MXNet parameter file (truncated or damaged?)" if "NDArray file format" in str(err)
                else f"does not fit this model ({_reason(err)})")
        raise InputError(f"{params_file}: {what}; --overwrite starts the run afresh") from None
    load_optimizer_state(path, trainer)
    log.info("resuming from %s: %d epoch(s) done", path, len(history))
    return history


# The output folder

class OutputDir:
    """A run's output folder, claimed by the package's marker; see `use_output_dir`."""

    def __init__(self, path):
        self.path = path
        self.checkpoints = os.path.join(path, CHECKPOINT_DIRNAME)
        self.marker = os.path.join(path, RUN_MARKER)

    def written(self):
        """The outputs (OUTPUT_FILES) the run has finished writing, as the marker lists them."""
        listed = (read_json(self.marker) or {}).get("written", [])
        return [name for name in OUTPUT_FILES if name in listed and os.path.isfile(os.path.join(self.path, name))]

    def set_written(self, names):
        """Record that the run has finished writing `names` (and no other output)."""
        write_json(self.marker, {"package": "gluon_cifar", "written": list(names)})

    def finished(self, epochs):
        """Whether every epoch up to `epochs` is checkpointed and every output written."""
        path = latest_checkpoint(self.checkpoints)
        return (path is not None and len(read_history(path)) >= epochs
                and len(self.written()) == len(OUTPUT_FILES))


@contextlib.contextmanager
def use_output_dir(out, resume=False, overwrite=False):
    """Claim and lock the output folder `out` for one run; yield its OutputDir.

    The policy: a folder the package did not make (no marker) is used only when empty. A folder holding a
    previous run is refused, so two runs never mix, unless `resume` (continue the run whose checkpoint is
    there) or `overwrite` (start afresh: the old checkpoint is removed now, the old outputs are replaced as
    the new run writes them). Another run using `out` now holds its lock: refused. Staging files that killed
    writes left are removed.
    """
    _make_writable_folder(out)
    _refuse_foreign(out)
    with open(os.path.join(out, LOCK_FILE), "a") as lock:  # created once, never written: a lock, no content
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{out} is in use by another run: wait for it to finish, or choose another "
                             "--output-dir") from None
        except OSError as err:
            raise InputError(f"cannot lock {out} for this run: {err.strerror or err}") from None
        _refuse_foreign(out)  # again, now that no other run can change it
        output = OutputDir(out)
        _apply_policy(output, resume, overwrite)
        yield output


def _make_writable_folder(out):
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass  # a write probe: no permission, a read-only mount, ... fail here, not after training
    except OSError as err:
        raise InputError(f"cannot write to {out}: {err.strerror or err}") from None


def _refuse_foreign(out):
    """Refuse a folder that holds anything but does not carry the package's marker."""
    entries = sorted(set(os.listdir(out)) - {LOCK_FILE})
    if entries and RUN_MARKER not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise InputError(f"{out} holds files that are not a gluon_cifar run ({shown}): choose an empty or new "
                         "--output-dir")


def _apply_policy(output, resume, overwrite):
    if os.path.lexists(output.checkpoints) and (os.path.islink(output.checkpoints)
                                                or not os.path.isdir(output.checkpoints)):
        raise InputError(f"{output.checkpoints} is not the folder a run makes (a link or a file): move it")
    has_checkpoint = latest_checkpoint(output.checkpoints) is not None
    if resume and not has_checkpoint:
        raise InputError(f"--resume: {output.checkpoints} holds no checkpoint to resume from")
    # a run that stopped before its first checkpoint leaves only its settings: that does not count
    previous = [name for name in OUTPUT_FILES if os.path.lexists(os.path.join(output.path, name))]
    if (has_checkpoint or previous) and not (resume or overwrite):
        shown = ", ".join(([CHECKPOINT_DIRNAME] if has_checkpoint else []) + previous[:3])
        raise InputError(f"{output.path} already holds a run ({shown}): pass --resume to continue it, "
                         "--overwrite to replace it, or another --output-dir")
    checkpoints = os.listdir(output.checkpoints) if os.path.isdir(output.checkpoints) else []
    kept = [name for name in checkpoints if _EPOCH_DIR.fullmatch(name) or name == BEST_DIRNAME]
    stale = [os.path.join(output.checkpoints, name) for name in sorted(checkpoints)
             if _STAGING_DIR.fullmatch(name) or (overwrite and name in kept)]
    for folder in (path for path in stale if os.path.basename(path) in kept):
        if os.path.islink(folder) or not os.path.isdir(folder):
            raise InputError(f"{folder} is not a checkpoint a run made (a link or a file): move it")
        foreign = sorted(set(os.listdir(folder)) - set(CHECKPOINT_FILES + (PICKLED_STATES,)))
        if foreign:
            raise InputError(f"{folder} holds files a run does not write ({', '.join(foreign[:3])}): move them "
                             "elsewhere so that --overwrite can replace this checkpoint")
    # Checked: now the changes. A staging folder holding something else keeps it.
    for folder in stale:
        remove_checkpoint_folder(folder)
    for name in OUTPUT_FILES + (CONFIG_FILENAME, RUN_MARKER):
        remove_stale_staging(os.path.join(output.path, name))
    if not resume:  # the outputs there (an --overwrite'n run's) are not this run's
        output.set_written([])


def record_config(output, config, data):
    """Save the run's settings (a RunConfig) and the fingerprint of its `data` (data.data_fingerprint) as
    `config.json` in `output` (an OutputDir) as it starts.

    On resume, refuse settings that differ from the saved ones (see config.RESUMABLE for those that may
    change) and fewer epochs than the checkpoint holds, before the file is touched: it never disagrees with
    the checkpoint. Other test images than the run predicted mark submission.csv to be written again.
    """
    path = os.path.join(output.path, CONFIG_FILENAME)
    if config.resume:
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise InputError(f"{path}: missing or not valid JSON: --resume cannot check that the settings are "
                             "the run's; --overwrite starts the run afresh")
        conflict = resume_conflict(config, saved)
        if conflict:
            raise InputError(f"--resume continues the run as it was started, but {conflict} (see {path})")
        check_resumable(output.checkpoints, config.epochs)
        written, recorded = output.written(), saved.get("data")
        if isinstance(recorded, dict) and recorded.get("test") != data["test"] and "submission.csv" in written:
            log.info("the test images are not those of %s: predicting them again",
                     os.path.join(output.path, "submission.csv"))
            output.set_written([name for name in written if name != "submission.csv"])
        if saved.get("epochs") == config.epochs and saved.get("data") == data:
            return  # the run's settings stand (a finished run resumed changes no file)
    write_json(path, {**config.to_dict(), "data": data})


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
