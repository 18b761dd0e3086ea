"""Does a distributed job on one machine add up? 1, 2 and 4 local workers against one process with every core.

    python benchmarks/scaling.py --data-dir DIR [--workers 1 2 4] [--loaders 0 1] [--steps 15] [--json OUT]

Every run trains the chapter's step (its augmentation, batch 128 per process, hybridized with static
memory, as `train` does) on the real images of DIR (a Kaggle-layout folder), through the
package's own loaders, sampler, Trainer and `train_one_epoch`; `--warmup` steps, then `--steps` timed
steps. The distributed jobs are laid out by `gluon_cifar.training.launcher.plan` (the launcher's core split) and
run on 127.0.0.1 with `--servers` servers. Printed per run: the job's images per second, its ratio to
one process with all the cores (the baseline, run first), that ratio per worker (efficiency), and the
CPU seconds each role used during the timed steps (workers with their data-loader processes, servers,
scheduler), read from /proc at the first worker's start and end marks.
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

START, END = "scaling: start", "scaling: end"


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
    train_one_epoch(net, itertools.islice(batches, args.warmup), Steps(trainer, loss, devices), "warm-up")
    mx.npx.waitall()
    print(START, flush=True)
    start = time.perf_counter()
    stats = train_one_epoch(net, itertools.islice(batches, args.steps), Steps(trainer, loss, devices), "timed")
    mx.npx.waitall()
    seconds = time.perf_counter() - start
    print(END, json.dumps({"rank": rank, "seconds": seconds, "images": stats["examples"]}), flush=True)


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


def run(layout, log):
    """Start `layout` ([(name, env, argv)]); return worker 0's result and each role's CPU seconds between the marks."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "OMP_NUM_THREADS")}
    procs = {}
    for name, extra, argv in layout:
        procs[name] = subprocess.Popen(argv, env={**env, **extra}, stdin=subprocess.DEVNULL, text=True,
                                       stdout=subprocess.PIPE if name == "worker 0" else log, stderr=log)
    marks, result = [], None
    for line in procs["worker 0"].stdout:
        if line.startswith((START, END)):
            marks.append(cpu_seconds({p.pid for p in procs.values()}))
        if line.startswith(END):
            result = json.loads(line[len(END):])
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
            "--steps", str(args.steps)]


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
