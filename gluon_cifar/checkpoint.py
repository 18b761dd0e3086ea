"""Checkpoints and the output folder: a killed or interrupted run loses at most the epoch in progress.

After every epoch, `OUT/checkpoint/epoch-NNNN/` receives `net.params`, `trainer.states` (momentum and
the optimizer's update count, hence the learning-rate schedule's position) and `history.json` (one
entry per finished epoch). The three are written into a hidden staging folder that is renamed into
place in one step, so a checkpoint folder is either complete or absent; older epochs are then removed.
The weights of the epoch with the best validation accuracy so far stay in `OUT/checkpoint/best/net.params`.
`OUT/config.json` holds the run's settings (gluon_cifar.config), which a resumed run must share.

Random state: MXNet cannot export its generator state, so instead every epoch starts from MXNet's,
NumPy's (DataLoader shuffling) and Python's (random crops) generators seeded by `epoch_seed(seed,
epoch)`; the epoch number in a checkpoint therefore fixes the random stream of the rest of the run.
"""
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile

import numpy as onp
from mxnet.base import MXNetError

from .atomic import atomic_path, read_json, write_error, write_json
from .config import resume_conflict
from .errors import InputError

CHECKPOINT_DIRNAME = "checkpoint"
BEST_DIRNAME = "best"
_EPOCH_DIR = re.compile(r"epoch-(\d+)")
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


def save_checkpoint(folder, net, trainer, history):
    """Save parameters, trainer state and history after epoch `len(history)`, as one atomic step."""
    final = os.path.join(folder, f"epoch-{len(history):04d}")
    staging = os.path.join(folder, f".epoch-{len(history):04d}.partial")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        net.save_parameters(os.path.join(staging, "net.params"))
        trainer.save_states(os.path.join(staging, "trainer.states"))
        with open(os.path.join(staging, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
    except (OSError, MXNetError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(final, err) from None
    for name in os.listdir(folder):  # older epochs and staging folders of interrupted saves
        if name.startswith(("epoch-", ".epoch-")) and name != os.path.basename(final):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def save_best(folder, net):
    """Keep `net`'s weights as the run's best so far, in `folder/best/net.params` (written atomically).
    Which epoch that is, `history.json` of the checkpoint says (loop.best_epoch)."""
    os.makedirs(os.path.join(folder, BEST_DIRNAME), exist_ok=True)
    with atomic_path(best_params(folder)) as tmp:
        net.save_parameters(tmp)  # the devices' average, as the export


def best_params(folder):
    return os.path.join(folder, BEST_DIRNAME, "net.params")


def load_checkpoint(folder, net, trainer):
    """Restore the newest checkpoint of `folder` into `net` and `trainer`; return its history."""
    path = latest_checkpoint(folder)
    if path is None:
        raise InputError(f"{folder}: no checkpoint to resume from")
    devices = next(iter(net.collect_params().values())).list_ctx()
    net.load_parameters(os.path.join(path, "net.params"), ctx=devices)
    trainer.load_states(os.path.join(path, "trainer.states"))
    with open(os.path.join(path, "history.json")) as f:
        history = json.load(f)
    log.info("resuming from %s: %d epoch(s) done", path, len(history))
    return history


def prepare_output_dir(out, resume=False, overwrite=False):
    """Create `out` and apply the output-folder policy; return its checkpoint folder.

    A folder holding anything already (a previous run?) is refused, so two runs never mix, unless
    `resume` (continue the run whose checkpoint is there) or `overwrite` (start afresh: the old
    checkpoint is removed now, the old outputs are replaced as the new run writes them). A checkpoint
    folder without a checkpoint (a run stopped in its first epoch) does not count.
    """
    checkpoints = os.path.join(out, CHECKPOINT_DIRNAME)
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass  # a write probe: no permission, a read-only mount, ... fail here, not after training
        entries = os.listdir(out)
    except OSError as err:
        raise InputError(f"cannot write to {out}: {err.strerror or err}") from None
    has_checkpoint = latest_checkpoint(checkpoints) is not None
    if resume and not has_checkpoint:
        raise InputError(f"--resume: {checkpoints} holds no checkpoint to resume from")
    # a run that stopped before its first checkpoint leaves only its settings: that does not count
    previous = sorted(e for e in entries if has_checkpoint or e not in (CHECKPOINT_DIRNAME, CONFIG_FILENAME))
    if previous and not (resume or overwrite):
        shown = ", ".join(previous[:3]) + (", ..." if len(previous) > 3 else "")
        raise InputError(f"{out} already holds files ({shown}): pass --resume "
                         "to continue that run, --overwrite to replace it, or another --output-dir")
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return checkpoints


CONFIG_FILENAME = "config.json"


def record_config(out, config, resume=False):
    """Save the run's settings (a RunConfig) as `out/config.json` as it starts; on resume, refuse settings
    that differ from the saved ones (see config.RESUMABLE for those that may change)."""
    path = os.path.join(out, CONFIG_FILENAME)
    saved = read_json(path) if resume else None
    if saved is not None:
        conflict = resume_conflict(config, saved)
        if conflict:
            raise InputError(f"--resume continues the run as it was started, but {conflict} (see {path})")
    write_json(path, config.to_dict())


def interrupted_message(checkpoint_dir, argv):
    """What an interrupted run tells the user: what was kept and the command that resumes it."""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return "stopped before the first epoch finished; no checkpoint to resume from: run the command again"
    argv = [a for a in argv if a not in ("--resume", "--overwrite")] + ["--resume"]
    return (f"stopped; the last complete checkpoint is kept ({path}). "
            f"Resume with: {shlex.join([sys.executable, '-m', 'gluon_cifar.train', *argv])}")
