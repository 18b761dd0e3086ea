"""Start a distributed training job: MXNet's scheduler, parameter servers and workers.

    python -m gluon_cifar.launch -n 2 -s 1 -- --data-dir DIR --epochs 20 --output-dir out
    python -m gluon_cifar.launch -n 4 -s 2 --hostfile hosts -- --data-dir DIR --devices gpu ...

Every process gets the DMLC_* environment variables through which MXNet's dist kvstore finds the
others (MXNet's own tools/launch.py needs the dmlc-core tracker, which its wheel does not ship).
Without a host file everything runs on 127.0.0.1; with one, servers and workers are spread over its
hosts round-robin and started over ssh, and the scheduler runs here. Workers run the training
command's `main` with the training arguments (plus `--kvstore dist_sync` unless they name a dist
kvstore) through `run_worker`; servers and the scheduler run
`python -c "import gluon_cifar.numpy_compat, mxnet"` (MXNet serves until the workers finish; the compat
module first, for NumPy 2). Output is relayed line by line, prefixed with the process's name.

If any process fails or dies, or the job outlives --timeout, the launcher says which, stops the
others (SIGTERM, SIGKILL after --grace seconds) and exits with status 1: a worker waiting for a dead
one would otherwise wait forever. All processes are ended when the launcher ends. Rank 0 checkpoints
the job after every epoch, so the same command with `--resume` continues it.

Local processes share this machine's cores (`plan`): one thread for the scheduler and each server, one
core for each data-loader process, the rest split among the workers.
"""
import errno
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from gluon_cifar.errors import InputError

WORKER_ENTRY = "import sys; from gluon_cifar.launch import run_worker; run_worker(sys.argv[1:])"


def parse_hostfile(path):
    """Host names of `path`, one a line; blank lines and # comments are skipped."""
    try:
        with open(path) as f:
            hosts = [line.split("#")[0].strip() for line in f]
    except OSError as err:
        raise InputError(f"{path}: cannot read host file ({err.strerror})") from None
    hosts = [h for h in hosts if h]
    if not hosts:
        raise InputError(f"{path}: no hosts in the host file")
    return hosts


def free_port():
    """A TCP port nobody listens on right now on 127.0.0.1 (for a local scheduler)."""
    return scheduler_port("127.0.0.1")


def scheduler_port(host, port=None):
    """`port`, or a free one, checked by binding it on `host` as the scheduler will (ps-lite binds
    DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT): a port in use or an address not of this machine stops the launch
    here, not as a scheduler that aborts or workers that wait."""
    with socket.socket() as s:
        try:
            s.bind((host, port or 0))
        except socket.gaierror as err:
            raise InputError(f"--scheduler-host {host}: cannot resolve it ({err.strerror})") from None
        except OSError as err:
            what = f"port {port} on {host}" if port else host
            raise InputError(f"the scheduler cannot listen on {what} ({err.strerror}): "
                             + ("choose another --port" if err.errno == errno.EADDRINUSE
                                else "give --scheduler-host an address of this machine")) from None
        return s.getsockname()[1]


def address_towards(host):
    """This machine's address on the route to `host` (a UDP 'connect' sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 22))
        except OSError as err:
            raise InputError(f"cannot find a route to {host}: {err.strerror or err}") from None
        return s.getsockname()[0]


def option_value(train_args, name):
    """The value the training arguments give option `name` (`--name V` or `--name=V`), or None."""
    for i, arg in enumerate(train_args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(train_args):
            return train_args[i + 1]
    return None


def training_command(train_args):
    """The workers' arguments: the user's, with `--kvstore dist_sync` unless they chose a dist kvstore."""
    kind = option_value(train_args, "--kvstore")
    if kind is None:
        return list(train_args) + ["--kvstore", "dist_sync"]
    if not kind.startswith("dist"):
        raise InputError(f"--kvstore {kind} is for one process; the launcher needs dist_sync (the default) or "
                         "dist_device_sync")
    return list(train_args)


# Servers and the scheduler only add arrays and pass messages: one thread each. With more, OpenMP's idle
# threads spin between the servers' many small additions and burn whole cores (measured: docs/distributed.md).
SERVICE_THREADS = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def worker_threads(cores, num_workers, num_servers, loaders):
    """OpenMP threads of each local worker, so that the job's processes use `cores` cores in all: one core
    for the scheduler, one for each server and one for each data-loader process (`loaders` per worker,
    single-threaded), the rest shared among the workers (the first ones get the remainder)."""
    left = cores - 1 - num_servers - num_workers * loaders
    return [max(1, left // num_workers + (rank < left % num_workers)) for rank in range(num_workers)]


def plan(num_workers, num_servers, hosts, scheduler_host, port, train_args, python, cores=None):
    """[(name, host or None for here, environment, argv)] for the scheduler, the servers and the workers.

    Local workers share this machine's `cores` (default: all of them; `worker_threads`) unless the user
    set OMP_NUM_THREADS, which then holds for every worker, here or on the hosts.
    """
    base = {"DMLC_PS_ROOT_URI": scheduler_host, "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers),
            "PYTHONUNBUFFERED": "1"}
    if "DMLC_INTERFACE" in os.environ:  # the user's choice wins, and travels over ssh
        base["DMLC_INTERFACE"] = os.environ["DMLC_INTERFACE"]
    threads = [None] * num_workers
    if "OMP_NUM_THREADS" in os.environ:
        threads = [os.environ["OMP_NUM_THREADS"]] * num_workers
    elif hosts is None:
        loaders = int(option_value(train_args, "--num-workers") or 0)
        threads = worker_threads(cores or os.cpu_count() or 1, num_workers, num_servers, max(loaders, 0))
    if hosts is None:  # ps-lite on loopback needs both, or it picks another interface
        base.update(DMLC_NODE_HOST="127.0.0.1", DMLC_INTERFACE="lo")
    serve = [python, "-c", "import gluon_cifar.numpy_compat, mxnet"]
    train = [python, "-c", WORKER_ENTRY] + training_command(train_args)
    service = {**base, **SERVICE_THREADS}
    procs = [("scheduler", None, {**service, "DMLC_ROLE": "scheduler"}, serve)]
    procs += [(f"server {i}", hosts and hosts[i % len(hosts)], {**service, "DMLC_ROLE": "server"}, serve)
              for i in range(num_servers)]
    procs += [(f"worker {i}", hosts and hosts[i % len(hosts)],
               {**base, "DMLC_ROLE": "worker", **({"OMP_NUM_THREADS": str(threads[i])} if threads[i] else {})},
               train) for i in range(num_workers)]
    return procs


def start(name, host, env, argv, ssh, events):
    """Start one process in its own process group; a thread relays its output and reports its end."""
    if host is None:
        full_env = {k: v for k, v in os.environ.items() if k != "PORT"}  # ps-lite binds every node to $PORT
        proc = subprocess.Popen(argv, env={**full_env, **env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    else:  # -tt: the remote process gets SIGHUP when this ssh ends
        remote = (f"cd {shlex.quote(os.getcwd())} && unset PORT && env "
                  + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(argv))
        proc = subprocess.Popen(shlex.split(ssh) + ["-tt", "-o", "BatchMode=yes", host, remote],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def relay():
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"[{name}] {line.decode(errors='replace').rstrip()}\n")
            sys.stdout.flush()
        events.put((name, proc.wait()))

    threading.Thread(target=relay, daemon=True).start()
    print(f"started {name} (pid {proc.pid}) on {host or '127.0.0.1'}", flush=True)
    return proc


def describe(status):
    if status < 0:
        return f"was killed by signal {signal.Signals(-status).name}"
    return f"exited with status {status}"


def stop(procs, grace, politely=True):
    """End every process still running: SIGTERM (unless not `politely`: then they are given `grace`
    seconds to end by themselves), SIGKILL what is left after `grace` seconds; reap them all."""
    def signal_all(sig):
        for proc in procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
    if politely:
        signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    signal_all(signal.SIGKILL)
    for proc in procs.values():
        proc.wait()


def supervise(procs, events, timeout, grace):
    """Wait for the job; return None when every worker succeeded, else why it failed.

    A server or the scheduler ending cleanly is normal once the workers are ending (their exits can
    be seen in any order); the workers then get `grace` seconds to report before it counts as a failure.
    """
    workers_left = {name for name in procs if name.startswith("worker")}
    deadline = None if timeout is None else time.monotonic() + timeout
    ended_service = None
    while workers_left:
        try:
            name, status = events.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            if ended_service:
                return f"{ended_service} ended but {', '.join(sorted(workers_left))} did not finish"
            return f"the job did not finish within --timeout {timeout:g} s"
        if status != 0:
            return f"{name} (pid {procs[name].pid}) {describe(status)}"
        if name in workers_left:
            workers_left.discard(name)
        elif ended_service is None:
            ended_service = name
            deadline = min(deadline or float("inf"), time.monotonic() + grace)
    return None


def run_job(layout, ssh="ssh", timeout=None, grace=10.0):
    """Start the processes of `layout` (see `plan`), relay their output and wait for the workers; on a
    failure say what failed (one `error:` line) and stop the rest. Returns None, or why the job failed."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed launcher still ends its job
    events = queue.Queue()
    procs = {}
    failure = None
    try:
        for name, host, env, command in layout:
            procs[name] = start(name, host, env, command, ssh, events)
        failure = supervise(procs, events, timeout, grace)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        running = [name for name, proc in procs.items() if proc.poll() is None]
        if failure:
            print(f"error: {failure}; stopping the other {len(running)} process(es)"
                  f"{': ' + ', '.join(running) if running else ''} (SIGKILL after {grace:g} s); the same "
                  "command with --resume continues from the last complete epoch, if one was checkpointed",
                  file=sys.stderr, flush=True)
        # After the workers' success the servers and the scheduler end by themselves.
        stop(procs, grace, politely=failure is not None)
    return failure


