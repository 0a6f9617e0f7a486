"""The ``zc-async`` command: build the parser, then run one subcommand.

Subcommands:

``demo``
    Start from an empty embedded FileStorage under ``var/``, install the
    queue, start a real threaded dispatcher, run a parallel Monte-Carlo
    estimate of pi with live progress, print the result and shut down
    cleanly.
"""
import argparse
import contextlib
import logging
import os
import sys
import time

import transaction
import ZODB
import ZODB.FileStorage
import zc.lockfile

from .. import configure
from .. import demo as demo_jobs
from .. import dispatcher as dispatcher_registry
from .. import instanceuuid
from .. import interfaces
from .. import subscribers
from .. import twist

# How long to wait, in all, for a dispatcher's threads when shutting down,
# normally and after an interruption of the demo.
STOP_TIMEOUT = 3
INTERRUPTED_STOP_TIMEOUT = 0.5

# How often the demo re-reads the job's progress.
PROGRESS_INTERVAL = 0.1

# The interpreter's thread switch interval while the demo runs (seconds).
DEMO_SWITCH_INTERVAL = 0.0005


def main(argv=None):
    """Run the ``zc-async`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the process exit status (130 after Ctrl-C).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print('zc-async: interrupted', file=sys.stderr)
        return 130


def build_parser():
    """The argument parser of the ``zc-async`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog='zc-async',
        description='zc.async: a durable, transactional job queue in ZODB.')
    commands = parser.add_subparsers(title='commands', metavar='COMMAND')
    commands.required = True
    demo = commands.add_parser(
        'demo', help='run a parallel Monte-Carlo estimate of pi',
        description=(
            'Run a parallel Monte-Carlo estimate of pi as a zc.async'
            ' composite job on a real dispatcher and a new embedded'
            ' FileStorage under --var (replacing the previous run\'s),'
            ' showing progress, then print the result.'))
    demo.add_argument('--var', default='var', metavar='DIR',
                      help='directory for the database, log and instance'
                           ' UUID (default: ./var)')
    demo.add_argument('--samples', type=_positive_int, default=4000000,
                      metavar='N',
                      help='total number of random points (default: 4000000)')
    demo.add_argument('--jobs', type=_positive_int, default=4, metavar='N',
                      help='number of parallel sample jobs (default: 4)')
    demo.add_argument('--timeout', type=float, default=600, metavar='SECONDS',
                      help='give up after this long (default: 600)')
    demo.set_defaults(run=run_demo)
    from ..worker import add_worker_parser
    add_worker_parser(commands)
    from .clidb import add_db_parsers
    add_db_parsers(commands)
    from .clischedules import add_schedule_parsers
    add_schedule_parsers(commands)
    from .cliput import add_put_parser
    add_put_parser(commands)
    from .cliupgrade import add_upgrade_parsers
    add_upgrade_parsers(commands)
    from .sandboxcli import add_sandbox_parsers
    add_sandbox_parsers(commands)
    from .clijobs import add_job_action_parsers
    add_job_action_parsers(commands)
    return parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            'expected a positive integer, got %r' % (text,))
    return value


def run_demo(args):
    """The ``demo`` subcommand; returns the exit status."""
    if args.samples < args.jobs:
        print('zc-async demo: --samples (%d) must be at least --jobs (%d)'
              % (args.samples, args.jobs), file=sys.stderr)
        return 2
    var = os.path.abspath(args.var)
    os.makedirs(var, exist_ok=True)
    # The demo owns its process: its instance UUID lives beside its data.
    os.environ.setdefault(instanceuuid.key, os.path.join(var, 'uuid.txt'))
    path = os.path.join(var, 'demo.fs')
    log_file = os.path.join(var, 'zc-async-demo.log')
    logging_state = _start_logging(log_file)
    try:
        # Each run starts from an empty database (the lock is taken first,
        # so a database in use by another process is left alone).
        storage = ZODB.FileStorage.FileStorage(path, create=True)
    except zc.lockfile.LockError:
        _stop_logging(logging_state)
        print('zc-async demo: %s is in use by another process' % path,
              file=sys.stderr)
        return 1
    db = ZODB.DB(storage)
    try:
        print('zc-async demo: database %s, log %s' % (path, log_file))
        configure.base()
        configure.start(db, poll_interval=1, agent_size=args.jobs + 2)
        dispatcher = dispatcher_registry.get()
        try:
            with _short_thread_switches():
                status = _estimate_pi(db, dispatcher, args.samples,
                                      args.jobs, args.timeout)
        except BaseException:
            # Interrupted: the sample jobs still running are abandoned (the
            # next run starts afresh), so do not wait long for them.
            stop_dispatcher(dispatcher, timeout=INTERRUPTED_STOP_TIMEOUT)
            raise
        stop_dispatcher(dispatcher)
        return status
    finally:
        db.close()
        _stop_logging(logging_state)


def _start_logging(path):
    """Log to ``path`` (zc.async from INFO, others from WARNING); also show
    zc.async's errors on stderr.  Returns what :func:`_stop_logging` needs.
    """
    to_file = logging.FileHandler(path, mode='w')  # one run per log
    to_file.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s %(name)s: %(message)s'))
    to_stderr = logging.StreamHandler()
    to_stderr.setLevel(logging.ERROR)
    root, ours = logging.getLogger(), logging.getLogger('zc.async')
    saved = [(root, root.level, to_file), (ours, ours.level, to_stderr)]
    root.setLevel(logging.WARNING)
    ours.setLevel(logging.INFO)
    root.addHandler(to_file)
    ours.addHandler(to_stderr)
    return saved


def _stop_logging(saved):
    for logger, level, handler in saved:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


@contextlib.contextmanager
def _short_thread_switches():
    """Let the reactor thread in often while CPU-bound jobs run.

    The sample jobs hold the GIL for the default 5 ms slices; shorter slices
    let the reactor commit their progress promptly.
    """
    saved = sys.getswitchinterval()
    sys.setswitchinterval(DEMO_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


def _estimate_pi(db, dispatcher, samples, jobs, timeout):
    """Put the composite job, show its progress, print the estimate."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        # The dispatcher commits to the queue too: retry on conflicts.
        for attempt in tm.attempts():
            with attempt:
                queue = conn.root()[interfaces.KEY]['']
                job = queue.put(demo_jobs.estimate_pi(samples, jobs))
                sample_jobs = list(job.args)
        print('estimating pi from %d random points in %d parallel jobs'
              % (samples, jobs))
        started = time.monotonic()
        result = _show_progress(tm, queue, job, sample_jobs,
                                started + timeout, dispatcher)
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    if result is None:
        print('zc-async demo: no result after %.1f seconds (%s)'
              % (elapsed, 'dispatcher running' if dispatcher.thread.is_alive()
                 else 'dispatcher stopped'), file=sys.stderr)
        return 1
    if isinstance(result, twist.Failure):
        print('zc-async demo: the job failed:\n%s' % result.getTraceback(),
              file=sys.stderr)
        return 1
    print('pi is about %.6f (off by %.6f), computed in %.2f seconds'
          % (result, abs(result - 3.141592653589793), elapsed))
    return 0


def _show_progress(tm, queue, job, sample_jobs, deadline, dispatcher):
    """Print progress until ``job`` completes; return its result.

    Also waits for the queue and its agents to be empty: the job completes
    inside its post-process's callbacks, which commit their own end after
    it.  Returns None if the deadline passed or the dispatcher stopped first.
    """
    shown = None
    while True:
        with tm:  # a new transaction sees what the workers committed
            done = job.status == interfaces.COMPLETED and _idle(queue)
            result = job.result
            # Live annotations are committed apart from the job: the last
            # one may land after the job completed.
            fractions = [1.0 if sample.status == interfaces.COMPLETED
                         else sample.annotations.get(demo_jobs.PROGRESS, 0.0)
                         for sample in sample_jobs]
        line = _progress_line(fractions)
        if line != shown:
            print(line, flush=True)
            shown = line
        if done:
            return result
        if time.monotonic() > deadline or not dispatcher.thread.is_alive():
            return None
        time.sleep(PROGRESS_INTERVAL)


def _idle(queue):
    """Whether ``queue`` and all its agents hold no jobs."""
    return not len(queue) and not any(
        len(agent) for agents in queue.dispatchers.values()
        for agent in agents.values())


def _progress_line(fractions):
    total = sum(fractions) / len(fractions)
    bar = '#' * round(total * 20)
    return 'progress [%-20s] %3d%%  (jobs: %s)' % (
        bar, round(total * 100),
        ' '.join('%d%%' % round(f * 100) for f in fractions))


def stop_dispatcher(dispatcher, timeout=STOP_TIMEOUT):
    """Stop a dispatcher started by ``ThreadedDispatcherInstaller``.

    Its running jobs get up to ``timeout`` seconds to finish (see
    :mod:`zc.async.shutdown`); then it deactivates and its reactor stops.
    Waits for its threads until about then (jobs still running after that
    are left to their daemon threads), restores its signal handlers and
    removes it from the process's dispatcher registry.
    """
    subscribers.stop_and_forget(dispatcher, timeout)


if __name__ == '__main__':
    sys.exit(main())
