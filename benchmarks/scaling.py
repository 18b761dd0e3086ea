"""Does a distributed job add up? Local workers against one process with every core, or, with
`--cores-per-worker K`, as machines are added (weak scaling): each worker pinned to K cores of its own.

    python benchmarks/scaling.py --data-dir DIR [--workers 1 2 4] [--loaders 0 1] [--steps 15] [--json OUT]
    python benchmarks/scaling.py --data-dir DIR --cores-per-worker 4 [--workers 1 2 4] [--servers 1]

Every run trains the chapter's step (its augmentation, batch 128 per process, hybridized with static
memory, as `train` does) on the real images of DIR (a Kaggle-layout folder), through the
package's own loaders, sampler, Trainer and `train_one_epoch`; `--warmup` steps, then `--steps` timed
steps. The distributed jobs are laid out by `gluon_cifar.training.launcher.plan` (the launcher's core split) and
run on 127.0.0.1 with `--servers` servers. Printed per run: the job's images per second, its ratio to
one process with all the cores (the baseline, run first), that ratio per worker (efficiency), and the
CPU seconds each role used during the timed steps (workers with their data-loader processes, servers,
scheduler), read from /proc at the first worker's start and end marks.

Weak scaling (`--cores-per-worker K`): worker i runs on cores [iK, (i+1)K) only (sched_setaffinity, K
OpenMP threads), the scheduler and servers on the cores after the largest job's workers (all cores where
none are left), and the baseline is one worker on K cores through the same launcher: a job of W workers
should give W times its images per second. Printed per W: the job's img/s, speed-up over W=1, efficiency
(speed-up / W), the mean seconds per step of forward+backward, of the gradients' push/pull through the
kvstore (which includes waiting for the slowest worker) and of the update, each waited for, over
`--breakdown` extra steps; and the bytes each worker sent and received per step (loopback counters of
/proc/net/dev over the timed steps, divided by the workers), against 2 x 4 bytes per parameter.
"""
import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from gluon_cifar.training import launcher  # noqa: E402  (imports no MXNet: threads are set per process below)
from gluon_cifar.training.launcher import free_port

START, END, PHASES = "scaling: start", "scaling: end", "scaling: phases"


def worker(args):
    """One process of a run: its loaders and net, `--warmup` steps, then the timed steps between two marks."""
    import mxnet as mx
    from mxnet import gluon, npx
    from gluon_cifar.data.loaders import load_datasets, make_run_loaders
    from gluon_cifar.training.distributed import create_kvstore, rank_and_size
    from gluon_cifar.training.loop import Steps, make_trainer, seed_everything, train_one_epoch
    from gluon_cifar.model import get_net
    from gluon_cifar.settings import Run, RunConfig

    npx.set_np()
    seed_everything(0)
    kvstore = create_kvstore("dist_sync" if os.environ.get("DMLC_ROLE") == "worker" else "local")
    rank, workers = rank_and_size(kvstore)
    datasets = load_datasets(args.reorg_dir)
    run = Run(RunConfig(batch_size=args.batch_size, num_workers=args.loaders[0], devices="cpu", final=True),
              kvstore=kvstore, rank=rank, workers=workers, reorg_dir=args.reorg_dir)
    loader = make_run_loaders(datasets, run)["train_valid"]
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
    devices = [mx.cpu()]
    net = get_net(devices, num_classes=10)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = make_trainer(net, mx.lr_scheduler.FactorScheduler(step=10 ** 6, base_lr=0.1), 5e-4, kvstore)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    train_one_epoch(net, Taken(batches, args.warmup), Steps(trainer, loss, devices), "warm-up")
    mx.npx.waitall()
    print(START, flush=True)
    start = time.perf_counter()
    stats = train_one_epoch(net, Taken(batches, args.steps), Steps(trainer, loss, devices), "timed")
    mx.npx.waitall()
    seconds = time.perf_counter() - start
    parameters = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    print(END, json.dumps({"rank": rank, "seconds": seconds, "images": stats["examples"], "parameters": parameters}),
          flush=True)
    if args.breakdown:
        print(PHASES, json.dumps(step_phases(net, itertools.islice(batches, args.breakdown), trainer, loss)), flush=True)


class Taken:
    """The next `count` of `batches`, sized: train_one_epoch's progress needs len()."""

    def __init__(self, batches, count):
        self.batches, self.count = batches, count

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(self.batches, self.count)


def step_phases(net, batches, trainer, loss):
    """Mean seconds per step of a training step's three phases, each waited for before the next starts:
    forward and backward, the gradients' push/pull through the kvstore, and the SGD update."""
    import mxnet as mx
    from mxnet import autograd
    totals, steps = {"compute": 0.0, "push_pull": 0.0, "update": 0.0}, 0
    for X, y in batches:
        marks = [time.perf_counter()]
        with autograd.record():
            l = loss(net(X), y)
        l.backward()
        mx.npx.waitall()
        marks.append(time.perf_counter())
        trainer.allreduce_grads()
        mx.npx.waitall()
        marks.append(time.perf_counter())
        trainer.update(X.shape[0])
        mx.npx.waitall()
        marks.append(time.perf_counter())
        for phase, begin, end in zip(totals, marks, marks[1:]):
            totals[phase] += end - begin
        steps += 1
    return {phase: total / steps for phase, total in totals.items()}


def loopback_bytes():
    """Bytes sent over the loopback interface so far (/proc/net/dev): every byte one local process sends another."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, fields = line.partition(":")
            if name.strip() == "lo":
                return int(fields.split()[8])
    return 0


def cpu_seconds(pids):
    """{pid: user+system CPU seconds of pid and all its descendants} for the processes `pids`."""
    ticks, parent, own = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)], own[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks

    def tree(pid):
        return own.get(pid, 0.0) + sum(tree(child) for child, p in parent.items() if p == pid)
    return {pid: tree(pid) for pid in pids}


def run(layout, log, cores=None):
    """Start `layout` ([(name, env, argv)]), each process on `cores[name]` where given; return worker 0's
    result (with its step phases and the loopback bytes between the marks) and each role's CPU seconds
    between the marks."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "OMP_NUM_THREADS")}
    procs, cores = {}, cores or {}
    for name, extra, argv in layout:
        pin = cores.get(name)
        procs[name] = subprocess.Popen(argv, env={**env, **extra}, stdin=subprocess.DEVNULL, text=True,
                                       stdout=subprocess.PIPE if name == "worker 0" else log, stderr=log,
                                       preexec_fn=(lambda pin=pin: os.sched_setaffinity(0, pin)) if pin else None)
    marks, sent, result = [], [], None
    for line in procs["worker 0"].stdout:
        if line.startswith((START, END)):
            marks.append(cpu_seconds({p.pid for p in procs.values()}))
            sent.append(loopback_bytes())
        if line.startswith(END):
            result = json.loads(line[len(END):])
            result["loopback_bytes"] = sent[1] - sent[0]
        if line.startswith(PHASES):
            result["phases"] = json.loads(line[len(PHASES):])
    for name, proc in procs.items():
        if proc.wait(timeout=120) != 0:
            sys.exit(f"error: {name} exited with status {proc.returncode}; see {log.name}")
    if result is None or len(marks) != 2:
        sys.exit(f"error: worker 0 gave no timing; see {log.name}")
    roles = {}
    for name, proc in procs.items():
        role = name.split()[0]
        roles[role] = roles.get(role, 0.0) + marks[1][proc.pid] - marks[0][proc.pid]
    return result, roles


def worker_argv(args, loaders):
    return [sys.executable, os.path.abspath(__file__), "--role", "worker", "--reorg-dir", args.reorg_dir,
            "--batch-size", str(args.batch_size), "--loaders", str(loaders), "--warmup", str(args.warmup),
            "--steps", str(args.steps), "--breakdown", str(args.breakdown if args.cores_per_worker else 0)]


def weak_scaling(args, log):
    """One row per job size of `args.workers`: W workers of `args.cores_per_worker` pinned cores each."""
    k, available = args.cores_per_worker, sorted(os.sched_getaffinity(0))
    if k * max(args.workers) > len(available):
        sys.exit(f"error: {max(args.workers)} workers x {k} cores need {k * max(args.workers)} cores; "
                 f"this process may use {len(available)}")
    spare = available[k * max(args.workers):] or available  # the services' own cores, where any are left
    rows = []
    for workers in args.workers:
        layout = launcher.plan(workers, args.servers, None, "127.0.0.1", free_port(), ["--num-workers", "0"],
                               sys.executable, len(available))
        cores = {name: set(available[k * int(name.split()[1]):k * (int(name.split()[1]) + 1)])
                 if name.startswith("worker") else set(spare) for name, _, _, _ in layout}
        job, roles = run([(name, {**env, "OMP_NUM_THREADS": str(k)} if name.startswith("worker") else env,
                           worker_argv(args, 0) if name.startswith("worker") else argv)
                          for name, _, env, argv in layout], log, cores)
        rows.append({"workers": workers, "cores_per_worker": k, "service_cores": sorted(spare),
                     "img_s": job["images"] * workers / job["seconds"], "seconds": job["seconds"],
                     "phases": job.get("phases"), "cpu_s": roles, "parameters": job["parameters"],
                     "bytes_per_step_per_worker": job["loopback_bytes"] / args.steps / workers})
        print(f"done: {workers} worker(s) x {k} cores: {rows[-1]['img_s']:.1f} img/s", flush=True)
    base = rows[0]["img_s"] / rows[0]["workers"]
    print(f"{'workers':>7} {'cores':>5} {'img/s':>7} {'speed-up':>8} {'eff.':>5} {'compute s':>9} {'push/pull s':>11} "
          f"{'update s':>8} {'MB/step/worker':>14}   (per step; expected {8 * rows[0]['parameters'] / 1e6:.1f} MB: "
          "2 x 4 bytes a parameter)")
    for r in rows:
        speedup = r["img_s"] / base
        phases = r["phases"] or {"compute": float("nan"), "push_pull": float("nan"), "update": float("nan")}
        print(f"{r['workers']:>7} {r['workers'] * r['cores_per_worker']:>5} {r['img_s']:>7.1f} {speedup:>8.2f} "
              f"{speedup / r['workers']:>5.2f} {phases['compute']:>9.3f} {phases['push_pull']:>11.3f} "
              f"{phases['update']:>8.3f} {r['bytes_per_step_per_worker'] / 1e6:>14.1f}", flush=True)
    print(f"services (scheduler, {args.servers} server(s)) on cores {rows[0]['service_cores']}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="Kaggle-layout folder of real images")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--loaders", type=int, nargs="+", default=[0],
                        help="data-loader processes per worker (--num-workers) to measure")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--service-threads", type=int,
                        help="OpenMP threads of the servers and the scheduler (default: the launcher's, 1)")
    parser.add_argument("--one-process", action=argparse.BooleanOptionalAction, default=True,
                        help="run the one-process baseline (--no-one-process: only the jobs; ratios then "
                             "against --baseline)")
    parser.add_argument("--baseline", type=float, help="img/s of one process, from an earlier run")
    parser.add_argument("--cores-per-worker", type=int,
                        help="weak scaling: each worker pinned to this many cores of its own, against one such worker")
    parser.add_argument("--breakdown", type=int, default=5,
                        help="extra steps per worker timing forward+backward, push/pull and update apart (0: none)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--role", choices=["driver", "worker"], default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--reorg-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "worker":
        return worker(args)
    if not args.data_dir:
        parser.error("--data-dir is required")

    from gluon_cifar.data.reorg import reorg_cifar10_data
    scratch = tempfile.mkdtemp(prefix="scaling-")
    args.reorg_dir = reorg_cifar10_data(args.data_dir, 0.1, os.path.join(scratch, "reorg"))
    print(f"machine: {platform.processor() or platform.machine()}, {args.cores} cores; batch {args.batch_size} "
          f"per process, {args.warmup} warm-up + {args.steps} timed steps; {args.servers} server(s)", flush=True)
    # --service-threads N: the servers and the scheduler as the launcher used to start them (N threads)
    service_threads = {"OMP_NUM_THREADS": str(args.service_threads),
                       "MXNET_CPU_WORKER_NTHREADS": "1"} if args.service_threads else {}
    rows = []
    if args.cores_per_worker:
        with open(os.path.join(scratch, "processes.log"), "w") as log:
            rows = weak_scaling(args, log)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"cores": args.cores, "rows": rows}, f, indent=1)
        return
    with open(os.path.join(scratch, "processes.log"), "w") as log:
        baseline = args.baseline
        for loaders in args.loaders:
            if args.one_process:
                one, roles = run([("worker 0", {"OMP_NUM_THREADS": str(max(1, args.cores - loaders))},
                                   worker_argv(args, loaders))], log)
                rows.append({"run": "one process", "workers": 1, "loaders": loaders,
                             "img_s": one["images"] / one["seconds"], "threads": [max(1, args.cores - loaders)],
                             "cpu_s": roles, "seconds": one["seconds"]})
                baseline = max(baseline or 0, rows[-1]["img_s"])
            for workers in args.workers:
                layout = launcher.plan(workers, args.servers, None, "127.0.0.1", free_port(),
                                     ["--num-workers", str(loaders)], sys.executable, args.cores)
                job, roles = run([(name, {**env, **service_threads} if not name.startswith("worker") else env,
                                   worker_argv(args, loaders) if name.startswith("worker") else argv)
                                  for name, _, env, argv in layout], log)
                rows.append({"run": "launch", "workers": workers, "loaders": loaders,
                             "img_s": job["images"] * workers / job["seconds"], "cpu_s": roles,
                             "threads": [int(env["OMP_NUM_THREADS"]) for name, _, env, _ in layout
                                         if name.startswith("worker")], "seconds": job["seconds"]})
                print(f"done: {workers} worker(s), {loaders} loader(s) each: {rows[-1]['img_s']:.1f} img/s", flush=True)
    print_rows(rows, baseline)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cores": args.cores, "baseline_img_s": baseline, "rows": rows}, f, indent=1)


def print_rows(rows, baseline):
    print(f"{'run':<12} {'workers':>7} {'loaders':>7} {'threads':>12} {'img/s':>7} {'x one':>6} {'eff.':>5}   "
          "CPU s in the timed steps (cores busy)")
    for r in rows:
        ratio = r["img_s"] / baseline
        cpu = ", ".join(f"{role} {s:.1f} ({s / r['seconds']:.1f})" for role, s in r["cpu_s"].items())
        print(f"{r['run']:<12} {r['workers']:>7} {r['loaders']:>7} {'+'.join(map(str, r['threads'])):>12} "
              f"{r['img_s']:>7.1f} {ratio:>6.2f} {ratio / r['workers']:>5.2f}   {cpu}", flush=True)


if __name__ == "__main__":
    main()
