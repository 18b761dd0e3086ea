"""Process-wide settings, made explicitly by the command-line entry points and the notebook, never at import."""
import os


def use_all_cores():
    """Let MXNet use every core unless the user set OMP_NUM_THREADS (MXNet's own default is half of them,
    assuming hyper-threading). Call before `import mxnet`: its OpenMP runtime reads the variable when it loads."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
