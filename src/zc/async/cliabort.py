"""The ``zc-async abort`` command: ask for the abort of a job.

``zc-async abort DATABASE OID`` calls ``job.requestAbort()`` on the job of
that oid and commits: a pending job fails at once with AbortRequested; a
running one is stopped by the dispatcher that runs it, which raises
AbortRequested in the job's thread (see :mod:`zc.async.watchdog`).  A job
that has its result already, an unknown oid or a database that cannot be
opened prints one line on stderr and exits with status 2.  The database is
opened for writing (a FileStorage that a worker has open cannot be: abort
through that worker's dashboard instead).

:func:`add_abort_parser` plugs the command into the ``zc-async`` parser.
"""
from . import clidb
from . import monitor
from . import monitorquery
from . import webapi


def add_abort_parser(subparsers):
    """Register the ``abort`` subcommand."""
    parser = subparsers.add_parser(
        'abort', help='ask for the abort of a pending or running job',
        description='Ask for the abort of a job: a pending one fails at '
                    'once; a running one is stopped by its dispatcher.  '
                    'Either way it fails with AbortRequested.')
    clidb._add_common(parser)
    parser.add_argument('oid', metavar='OID', help="the job's integer oid")
    parser.add_argument('--database', metavar='NAME',
                        help='the name of the database holding the job, in '
                             'a multi-database set-up')
    parser.set_defaults(run=clidb._runner("abort", run_abort, writes=True))


def run_abort(options, conn):
    """``zc-async abort``: ``requestAbort`` the job (the runner commits)."""
    job = webapi.get_job(conn, options.oid, options.database)
    pending = monitorquery.status_word(job) == 'pending'
    answer = webapi.abort(conn, options.oid, options.database)
    if options.json:
        return monitor.encoder.encode(answer)
    if pending:
        return 'job %s failed with AbortRequested: it had not started' % (
            options.oid,)
    return ('abort of job %s requested: the dispatcher running it stops it '
            '(it fails with AbortRequested)' % (options.oid,))
