"""gluon_cifar.cli: the command prologue's environment checks, and forked workers' signals."""
import os
import signal

import pytest

from gluon_cifar.cli import check_mxnet_environment, report_input_errors
from gluon_cifar.errors import InputError


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # 3.12+; as DataLoader does
def test_a_command_s_forked_workers_die_on_sigterm_and_stay_out_of_its_process_group():
    """The command turns SIGTERM into a clean stop. A process it forks (a DataLoader worker) takes the
    default action instead, in a process group of its own: a Python handler there may never run (the CI
    run that hung at exit), and a group signal that killed an idle worker holding its pool's queue lock
    would hang the parent's `Pool.terminate()` (`timeout`, `kill -TERM -PGID`)."""
    def main(argv):
        parent_handler = signal.getsignal(signal.SIGTERM)
        pid = os.fork()
        if pid == 0:
            alone = os.getpgrp() == os.getpid() != os.getpgid(os.getppid())
            default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            held = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
            os._exit(alone + 2 * default + 4 * (not held))
        return parent_handler, signal.pthread_sigmask(signal.SIG_BLOCK, []), os.waitpid(pid, 0)[1]

    before = signal.getsignal(signal.SIGTERM)
    parent_handler, parent_mask, child_status = report_input_errors(main)(None)
    assert parent_handler not in (signal.SIG_DFL, signal.SIG_IGN, before)
    assert signal.SIGTERM not in parent_mask
    assert os.waitstatus_to_exitcode(child_status) == 7, "own group (1), default SIGTERM (2), not blocked (4)"
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("name, value, fragment", [
    ("OMP_NUM_THREADS", "abc", "whole number"), ("OMP_NUM_THREADS", "1.5", "whole number"),
    ("OMP_NUM_THREADS", "", "whole number"), ("OMP_NUM_THREADS", "0", "from 1 to"),
    ("OMP_NUM_THREADS", "-2", "whole number"), ("OMP_NUM_THREADS", "99999999", "from 1 to"),
    ("OMP_NUM_THREADS", "\u0663", "whole number"),  # an Arabic-Indic 3: int() takes it, MXNet does not
    ("MXNET_CPU_WORKER_NTHREADS", "0", "from 1 to"), ("MXNET_ENGINE_TYPE", "Fast", "one of NaiveEngine")])
def test_a_bad_mxnet_variable_is_refused(name, value, fragment):
    with pytest.raises(InputError, match=fragment) as err:
        check_mxnet_environment({name: value})
    assert name in str(err.value)


def test_good_mxnet_variables_pass():
    check_mxnet_environment({"OMP_NUM_THREADS": "4", "MXNET_CPU_WORKER_NTHREADS": " 2",
                             "MXNET_ENGINE_TYPE": "NaiveEngine"})
