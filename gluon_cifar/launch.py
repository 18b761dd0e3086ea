"""`python -m gluon_cifar.launch -n WORKERS [-s SERVERS] [--hostfile FILE] -- <training arguments>`.

Starts a distributed training job of MXNet's scheduler, parameter servers and workers
(`gluon_cifar.training.launcher`), after checking every option and the workers' training arguments.
This module imports no MXNet unless the training arguments need it checked.
"""
import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import traceback

from gluon_cifar.cli import ArgumentParser, check_mxnet_environment, report_input_errors
from gluon_cifar.errors import InputError, shorten
from gluon_cifar.training.launcher import (address_towards, option_value, parse_hostfile, plan, run_job, scheduler_port,
                                           training_command)


def check_resumed_job_size(train_args, num_workers):
    """Refuse, before any process starts, to `--resume` a run with another number of workers than it was
    started with (that changes the global batch, hence the run), as its `OUT/config.json` records it."""
    if "--resume" not in train_args:
        return
    from gluon_cifar.fs import read_json  # these load MXNet: only for a resume
    from gluon_cifar.settings import RunConfig
    from gluon_cifar.training.outputs import CONFIG_FILENAME
    out = option_value(train_args, "--output-dir") or RunConfig().output_dir
    saved = read_json(os.path.join(out, CONFIG_FILENAME))
    started = saved.get("job_workers") if isinstance(saved, dict) else None
    if isinstance(started, int) and started != num_workers:
        raise InputError(f"--resume: the worker count changed (was {started}, now {num_workers}): the run in {out} "
                         f"continues only on the {started} worker(s) it started with (-n {started}), which set its "
                         "global batch; a new run can start from its weights with --init-from")


def build_parser():
    parser = ArgumentParser(
        prog="python -m gluon_cifar.launch",
        usage="python -m gluon_cifar.launch -n WORKERS [-s SERVERS] [--hostfile FILE] -- <training arguments>",
        description="Run python -m gluon_cifar.train as a distributed job (MXNet's dist kvstore): a scheduler, "
                    "parameter servers and workers, here or on the hosts of a host file over ssh.")
    parser.add_argument("-n", "--workers", type=int, required=True,
                        help="distributed worker processes (each runs the training command; not DataLoader processes)")
    parser.add_argument("-s", "--num-servers", type=int, default=1, help="parameter-server processes")
    parser.add_argument("-H", "--hostfile",
                        help="one host a line: servers and workers go to them round-robin over ssh (the "
                             "same Python environment, working directory and data path on every host) (default: every "
                             "process here, on 127.0.0.1)")
    parser.add_argument("--scheduler-host",
                        help="address the hosts reach this machine by (default: the one on the route to the "
                             "first host; 127.0.0.1 without a host file)")
    parser.add_argument("--port", type=int, help="the scheduler's port (default: a free one)")
    parser.add_argument("--python", default=sys.executable, help="Python on the hosts (default: this one)")
    parser.add_argument("--ssh", default="ssh", help="ssh command, e.g. 'ssh -p 2222'")
    parser.add_argument("--timeout", type=float, help="stop the job after this many seconds (default: never)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds the processes get to end after SIGTERM before SIGKILL")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the training arguments")
    return parser


MAX_PROCESSES = 1024  # workers, or servers, of one job


def check_options(args):
    """Refuse launcher options the job could not run with, before anything starts."""
    for option, value in (("--hostfile", args.hostfile), ("--scheduler-host", args.scheduler_host),
                          ("--python", args.python), ("--ssh", args.ssh)):
        if value == "":
            raise InputError(f"{option} must not be empty (leave it out for its default)")
    for option, value in (("-n/--workers", args.workers), ("-s/--num-servers", args.num_servers)):
        if not 1 <= value <= MAX_PROCESSES:
            raise InputError(f"{option} must be from 1 to {MAX_PROCESSES}, got {value}")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise InputError(f"--port must be a TCP port, 1 to 65535, got {args.port}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise InputError(f"--timeout must be a finite number of seconds above 0, got {args.timeout:g}")
    if not (math.isfinite(args.grace) and args.grace >= 0):
        raise InputError(f"--grace must be a finite number of seconds, at least 0, got {args.grace:g}")
    interface = os.environ.get("DMLC_INTERFACE")
    if interface is not None and not re.fullmatch(r"[^\s/:]{1,15}", interface):
        raise InputError(f"DMLC_INTERFACE must name a network interface (1 to 15 characters, no spaces, / or :), "
                         f"got {shorten(repr(interface), 40)}: fix or unset it")
    check_python(args.python)


def check_python(python):
    """Refuse a --python that is missing, not executable, or cannot import gluon_cifar (the scheduler runs
    it here; on hosts the same path must work too)."""
    found = shutil.which(python)
    if found is None:
        what = "does not exist" if not os.path.lexists(python) else "is not an executable file"
        raise InputError(f"--python {python} {what}")
    try:
        probe = subprocess.run([found, "-c", "import gluon_cifar; print(gluon_cifar.__name__)"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InputError(f"--python {python} cannot be run ({getattr(err, 'strerror', None) or err})") from None
    if probe.returncode != 0 or probe.stdout.strip() != "gluon_cifar":
        last = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}, no output"])[-1]
        raise InputError(f"--python {python} is not a Python that imports gluon_cifar ({shorten(last, 120)})")


def check_training_args(train_args):
    """Parse the workers' arguments with the training command's own parser, refusing what it refuses,
    before any process starts (a worker would otherwise fail after the scheduler and servers started)."""
    from gluon_cifar.train import parse_config  # loads MXNet: RunConfig checks the devices
    parse_config(training_command(train_args))


@report_input_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    check_mxnet_environment()  # the workers get OMP_NUM_THREADS
    check_options(args)
    check_training_args(train_args)
    check_resumed_job_size(train_args, args.workers)
    hosts = parse_hostfile(args.hostfile) if args.hostfile else None
    scheduler_host = args.scheduler_host or (address_towards(hosts[0]) if hosts else "127.0.0.1")
    layout = plan(args.workers, args.num_servers, hosts, scheduler_host, scheduler_port(scheduler_host, args.port),
                  train_args, args.python)
    failure = run_job(layout, args.ssh, args.timeout, args.grace)
    if failure:
        sys.exit(130 if failure == "interrupted" else 1)
    print(f"all {args.workers} worker(s) finished", flush=True)



def run_worker(argv):
    """A worker: `python -m gluon_cifar.train` with `argv`, leaving at once if it fails.

    A worker that fails would otherwise wait forever at MXNet's exit barrier for the others, which
    wait for it in their next gradient exchange; its exit lets the launcher stop the job.
    """
    from gluon_cifar.train import main
    try:
        main(argv)
        return
    except SystemExit as stop:  # an InputError, already reported on stderr
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
