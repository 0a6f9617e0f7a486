"""Jobs whose callable is a coroutine function (``async def``).

When a job's callable returns a coroutine (an ``async def`` function does),
the job runs it to completion, with :func:`run`, on an asyncio event loop
of the thread that calls the job, before its result is stored: the
coroutine is the callable's body, inside the job's transaction.  Its
return value or exception is the job's outcome, its database changes are
committed with the result, and a retry calls the callable again for a new
coroutine.

Each thread keeps one loop, made when it first runs a coroutine job, for
all the coroutine jobs it runs: a dispatcher's worker threads own theirs
and close it when they end (:func:`close_loop`).  Tasks a job started and
left running are cancelled when the job's coroutine is done, so nothing of
one job runs during the next.  ``zc.asynchronous.local`` works in the job's
coroutine and the tasks it starts, which run in the thread; not in other
threads (``asyncio.to_thread``, executors).

:func:`interrupt` is the way to stop a coroutine job from another thread:
it cancels the job's task through the loop, so the coroutine gets a
``CancelledError`` at its next ``await`` (and its ``finally`` blocks run),
and the job's outcome is the error given.
"""
import asyncio
import threading

is_coroutine = asyncio.iscoroutine

_lock = threading.Lock()
_runs = {}  # {thread ident: _Run} of the coroutine jobs under way
_local = threading.local()  # ``loop``: this thread's loop


class _Run:
    """A coroutine job under way: its task, and the error it is to end with
    if interrupted."""

    error = None

    def __init__(self, task):
        self.task = task


def run(coroutine):
    """Run ``coroutine`` to completion on this thread's loop; return its
    result or raise its error.

    RuntimeError if this thread already runs an event loop (the job was
    called from a coroutine): a job cannot wait for its own coroutine there.
    """
    if _loop_running():
        coroutine.close()
        raise RuntimeError(
            'cannot run the coroutine of a job in a thread that already runs '
            'an asyncio event loop; call the job from another thread (a '
            "dispatcher's worker threads have no running loop)")
    loop = _loop()
    task = loop.create_task(coroutine)
    ident = threading.get_ident()
    record = _Run(task)
    with _lock:
        _runs[ident] = record
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if record.error is None:
            raise
        raise record.error from None
    finally:
        with _lock:
            del _runs[ident]
        # The task is still pending if an error from outside it (an
        # asynchronous exception raised in this thread) stopped the loop.
        _cancel_tasks(loop)


def interrupt(thread_ident, error):
    """Stop the coroutine job running in thread ``thread_ident``, if any,
    making ``error`` (an exception) its outcome; return whether one ran.

    Thread-safe; the loop wakes up at once.  The coroutine may catch the
    cancellation to clean up; if it swallows it and returns, its result
    stands.
    """
    with _lock:
        record = _runs.get(thread_ident)
        if record is None or record.task.done():
            return False
        record.error = error
    record.task.get_loop().call_soon_threadsafe(record.task.cancel)
    return True


def close_loop():
    """Close this thread's loop, if it made one (when the thread ends)."""
    loop = getattr(_local, 'loop', None)
    if loop is None:
        return
    _local.loop = None
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _loop_running():
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _loop():
    loop = getattr(_local, 'loop', None)
    if loop is None:
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _cancel_tasks(loop):
    """Cancel the tasks left on ``loop`` and let them finish."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
