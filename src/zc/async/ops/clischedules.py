"""The ``zc-async schedules`` command: the recurring jobs of a database.

Lists the schedules of every queue (see :mod:`zc.async.schedule`): name,
queue, callable, rule, next run, and the last tick that put a job, with
that job's oid and status; ``--json`` prints the same as JSON.  The
database is opened and read as the ``status``, ``jobs`` and ``job``
commands do (:mod:`zc.async.ops.clidb`).
"""
from . import clidb
from .. import monitor
from .. import monitordb
from . import monitorquery

_COLUMNS = ('NAME', 'QUEUE', 'CALLABLE', 'RULE', 'NEXT RUN', 'LAST RUN',
            'LAST JOB')


def add_schedule_parsers(subparsers):
    """Register the ``schedules`` subcommand."""
    parser = subparsers.add_parser(
        'schedules', help='list recurring jobs',
        description='List the recurring jobs (schedules) of every queue: '
                    'rule, next run, and the last tick that put a job.')
    clidb._add_common(parser)
    parser.add_argument('--queue', metavar='GLOB',
                        help='only queues whose name matches this glob '
                             '(the default queue is named "")')
    parser.set_defaults(run=clidb._runner('schedules', run_schedules))


def run_schedules(options, conn):
    """``zc-async schedules``: the text (or JSON) to print."""
    found = [summary for queue in monitorquery.queues(conn, options.queue)
             for summary in monitordb.schedule_summaries(queue)]
    if options.json:
        return monitor.encoder.encode(found)
    return format_schedules(found)


def format_schedules(summaries):
    """Schedule summaries as a table, one schedule a line."""
    if not summaries:
        return 'no schedules'
    cells = [_COLUMNS] + [
        (summary['name'], repr(summary['queue']), summary['callable'],
         summary['rule'], clidb.text(summary['next run']),
         clidb.text(summary['last run']), _last_job(summary))
        for summary in summaries]
    return clidb._table(cells)


def _last_job(summary):
    if summary['last job'] is None:
        return '-'
    oid, database = summary['last job']
    return '%d (%s)' % (oid, summary['last job status'])
