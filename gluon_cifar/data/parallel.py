"""The forked worker pool that hashes (fingerprint) and checks and links (placement) the source images, one
process per core: in a module of its own, so that both use it without importing each other.
"""
import multiprocessing
import os
import warnings

POOL_MIN_IMAGES = 512  # below this, checking the images in this process is quicker than starting workers


def worker_count(items):
    """How many processes `map_in_workers` uses for `items` things to do: one per core this process may
    use, or one below `POOL_MIN_IMAGES` (starting workers would take longer)."""
    return len(os.sched_getaffinity(0)) if items >= POOL_MIN_IMAGES else 1


def map_in_workers(func, items, processes=None):
    """Yield func(item) for each of `items`, computed by `processes` worker processes (default:
    `worker_count`) while the caller handles earlier results.

    The workers are forked, as DataLoader's are (MXNet restarts its engine in a forked child). Results come
    in `items`' order, and so does an exception: the first item's that raised, as in a single process.
    """
    processes = worker_count(len(items)) if processes is None else processes
    if processes <= 1:
        yield from map(func, items)
        return
    with warnings.catch_warnings():  # Python 3.12+ warns of forking a threaded process: MXNet restarts its
        warnings.simplefilter("ignore", DeprecationWarning)  # engine in a forked child, as DataLoader relies on
        pool = multiprocessing.get_context("fork").Pool(processes)
    with pool:
        chunk = max(1, min(256, len(items) // (8 * processes)))  # several chunks a worker: an even finish
        yield from pool.imap(func, items, chunksize=chunk)
