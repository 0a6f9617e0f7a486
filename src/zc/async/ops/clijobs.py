"""The ``zc-async remove|fail|retry|requeue|abort`` commands: act on one
job.

Each command opens a database from a ZODB URI or a ZConfig file (as
``zc-async job`` does, but for writing), loads the job in a tolerant
connection (:mod:`zc.async.tolerant`: the job's callable and arguments
need not be importable in this process), does what
:mod:`zc.async.jobactions` says, commits, and prints what it did (or, with
``--json``, ``{"done": ..., "job": [oid, "database"]}``, plus ``"new
job"`` for ``retry``).  What does not apply to the job (removing a running
job, say), and any other bad input, prints one line on stderr, commits
nothing and exits with status 2.

:func:`add_job_action_parsers` plugs the commands into the ``zc-async``
parser.
"""
from .. import interfaces
from .. import jobactions
from .. import monitor
from .. import monitordb
from .clidb import _add_common, _runner
from ..dispatcher import getId

_ACTIONS = {
    'remove': ('take a pending job out of its queue',
               'Take a pending job out of its queue: it is never run.'),
    'fail': ('complete a pending or stranded job as failed',
             'Complete a pending job, or one held by a dispatcher that is '
             'not live, as failed (an AbortedError saying the reason); its '
             'callbacks run in this process (--import the modules they '
             'need).'),
    'retry': ('put a copy of a failed job in its queue',
              'Put a new job, with the callable and arguments of a failed '
              'job, in its queue (or --queue).'),
    'requeue': ('put a job of a stopped dispatcher back in its queue',
                'Put a job that an agent of a dispatcher that is not live '
                'holds (assigned or active) back in its queue, first in '
                'line, to run again from the start.'),
    'abort': ('ask for the abort of a pending or running job',
              'Ask for the abort of a job: a pending one fails at once; '
              'the dispatcher running one stops it.  Either way it fails '
              'with AbortRequested.'),
}


def add_job_action_parsers(commands):
    """Register the ``remove``, ``fail``, ``retry``, ``requeue`` and
    ``abort`` subcommands."""
    for name, (summary, description) in _ACTIONS.items():
        parser = commands.add_parser(
            name, help=summary, description=description + '  The job\'s '
            'code need not be importable here.')
        _add_common(parser)
        parser.add_argument('oid', metavar='OID', help="the job's integer oid")
        parser.add_argument(
            '--database', metavar='NAME',
            help='the name of the database holding the job, in a '
                 'multi-database set-up')
        if name == 'fail':
            parser.add_argument('--reason', metavar='TEXT',
                                help='why, for the failure (default: '
                                     '"zc-async fail")')
        if name == 'retry':
            parser.add_argument('--queue', metavar='NAME',
                                help='the queue to put the new job in '
                                     '(default: the failed job\'s)')
        parser.set_defaults(run=_runner(name, _command(name), writes=True))


def _command(name):
    def command(options, conn):
        job = monitordb.get_job(conn, options.oid, options.database)
        new = None
        if name == 'fail':
            done = jobactions.fail(job, options.reason)
        elif name == 'retry':
            done, new = jobactions.retry(job, _queue(conn, options.queue))
        else:
            done = getattr(jobactions, name)(job)
        if not options.json:
            return done
        answer = {'done': done, 'job': getId(job)}
        if new is not None:
            answer['new job'] = getId(new)
        return monitor.encoder.encode(answer)
    return command


def _queue(conn, name):
    """The queue named ``name`` (None: the job's own), or ValueError."""
    if name is None:
        return None
    queue = (conn.root().get(interfaces.KEY) or {}).get(name)
    if queue is None:
        raise ValueError('no queue named %r' % (name,))
    return queue
