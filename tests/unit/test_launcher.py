"""gluon_cifar.training.launcher: how a job's processes share the machine's cores."""
import pytest

from gluon_cifar.training import launcher


@pytest.mark.parametrize("loaders, expected", [(0, [16, 15, 15, 15]), (2, [14, 13, 13, 13])])
def test_launcher_shares_the_cores_among_local_processes(monkeypatch, loaders, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    layout = launcher.plan(4, 2, None, "127.0.0.1", 9000, ["--num-workers", str(loaders)], "python", cores=64)
    threads = {name: int(env["OMP_NUM_THREADS"]) for name, _, env, _ in layout}
    assert [threads[f"worker {i}"] for i in range(4)] == expected
    assert threads["scheduler"] == threads["server 0"] == threads["server 1"] == 1
    assert sum(threads.values()) + 4 * loaders == 64
    for name, _, env, _ in layout:
        if not name.startswith("worker"):
            assert env["MXNET_CPU_WORKER_NTHREADS"] == "1"


def test_launcher_keeps_the_users_thread_count_for_the_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    layout = launcher.plan(2, 1, None, "127.0.0.1", 9000, [], "python", cores=64)
    assert [env["OMP_NUM_THREADS"] for _, _, env, _ in layout] == ["1", "1", "3", "3"]
