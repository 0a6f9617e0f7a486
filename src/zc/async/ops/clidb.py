"""The ``zc-async status``, ``jobs`` and ``job`` commands: the database,
read directly.

Each command opens a database from a ZODB URI or a ZConfig file (as
``zc-async worker`` does; ``file://`` and ``zeo://`` URIs are opened read
only, so a FileStorage may be read while a worker owns it), runs one tool
of the ``asyncdb`` monitor command (:mod:`zc.async.monitordb`) with the
same states and filters, and prints its answer for humans, or as the
``asyncdb`` JSON with ``--json``.  Bad input (an unknown state, a bad
filter, an unknown oid, a database that cannot be opened) prints one line
on stderr and exits with status 2.

:func:`add_db_parsers` plugs the commands into the ``zc-async`` parser.
"""
import datetime
import sys

import ZODB.POSException

from .. import monitor
from .. import monitordb
from .. import tolerant
from .. import worker

EXIT_OK = 0
EXIT_ERROR = worker.EXIT_ERROR

#: The states ``zc-async jobs`` lists when none is given: all of them.
DEFAULT_STATES = ('pending', 'assigned', 'active', 'callbacks', 'completed')

#: URI schemes whose storages can be opened read only (by a URI option).
_READ_ONLY_SCHEMES = ('file', 'zeo')

#: How often a command that changes the database tries on conflicts.
CONFLICT_ATTEMPTS = 5

#: The filter options of ``zc-async jobs``: option -> asyncdb filter name.
JOB_FILTERS = {
    '--queue': 'queue', '--agent': 'agent', '--uuid': 'uuid',
    '--callable': 'callable', '--requested-start': 'requested_start',
    '--start': 'start', '--end': 'end',
    '--callbacks-completed': 'callbacks_completed'}

_FILTER_HELP = {
    'queue': 'queue name glob (the default queue is named "")',
    'agent': 'agent name glob',
    'uuid': 'dispatcher UUID',
    'callable': "glob on the callable's name (dotted if it has a dot)",
}
_METAVARS = {'queue': 'GLOB', 'agent': 'GLOB', 'uuid': 'UUID',
             'callable': 'GLOB'}
_DATE_HELP = ('when the job %s: sinceINTERVAL, beforeINTERVAL or both, '
              'comma-separated (INTERVAL like 1D2H3M4S: that long ago)')
_DATE_WHAT = {'requested_start': 'was asked to begin', 'start': 'started',
              'end': 'ended',
              'callbacks_completed': 'finished its first callbacks'}


# ----------------------------------------------------------------- parsers

def add_db_parsers(subparsers):
    """Register the ``status``, ``jobs`` and ``job`` subcommands."""
    status = subparsers.add_parser(
        'status', help='show queues, dispatchers and agents',
        description='Show the queues of a database, with their activated '
                    'dispatchers (last ping, dead or alive) and agents.')
    _add_common(status)
    for name in ('queue', 'agent', 'uuid'):
        status.add_argument('--' + name, metavar=_METAVARS[name],
                            help=_FILTER_HELP[name])
    status.set_defaults(run=_runner('status', run_status))

    jobs = subparsers.add_parser(
        'jobs', help='list jobs by state and filters',
        description='List jobs: pending (by begin_after), then held by '
                    'agents (by start), then completed (newest first).')
    _add_common(jobs)
    jobs.add_argument(
        'states', nargs='*', metavar='STATE',
        help='pending, assigned, active, callbacks, and at most one of '
             'completed, succeeded and failed (default: all)')
    for option, name in JOB_FILTERS.items():
        jobs.add_argument(option, dest=name, metavar=_METAVARS.get(
            name, 'WHEN'), help=(
            _FILTER_HELP[name] if name in _FILTER_HELP
            else _DATE_HELP % _DATE_WHAT[name]))
    jobs.add_argument('--count', type=int, default=0, metavar='N',
                      help='show only the first N jobs (default: all)')
    jobs.add_argument('--display', default='default',
                      choices=('default', 'repr', 'details'),
                      help='a table (default), reprs, or job summaries')
    jobs.set_defaults(run=_runner('jobs', run_jobs))

    job = subparsers.add_parser(
        'job', help='describe one job',
        description='Describe a job: times, status, result, queue, agent.')
    _add_common(job)
    job.add_argument('oid', metavar='OID', help="the job's integer oid")
    job.add_argument('--database', metavar='NAME',
                     help='the name of the database holding the job, in a '
                          'multi-database set-up')
    job.add_argument('--traceback', nargs='?', const='default',
                     choices=('default', 'brief', 'verbose'),
                     help="also show a failed job's traceback (detail: "
                          'default, brief or verbose)')
    job.set_defaults(run=_runner('job', run_job))


def _add_common(parser):
    parser.add_argument(
        'uri', metavar='DATABASE',
        help='a ZODB URI (file://PATH, zeo://HOST:PORT, ...), the path of '
             'a FileStorage file or the path of a ZConfig file with a <zodb> '
             'section')
    parser.add_argument('--json', action='store_true',
                        help='print the answer as JSON (as asyncdb does)')
    parser.add_argument(
        '--import', metavar='MODULE', dest='imports', action='append',
        default=[], help='import this module first, so job pickles resolve '
                         '(repeatable)')
    parser.add_argument(
        '--connect-timeout', metavar='SECONDS', type=int,
        default=worker.DEFAULT_CONNECT_TIMEOUT,
        help='seconds to wait for a database server (default: %(default)s)')


def _runner(name, command, writes=False):
    """The runner of subcommand ``name``: open the database, print the
    text of ``command(options, conn)`` or one error line; return the exit
    status.

    With ``writes``, the database is opened for writing and the command
    runs in a tolerant connection (see :func:`_change`).
    """
    name = 'zc-async ' + name

    def run(options):
        try:
            worker.import_modules(options.imports)
            db = open_database(options.uri, options.connect_timeout,
                               read_only=not writes)
        except worker.WorkerError as e:
            return _fail(name, e)
        try:
            answer = (_change if writes else _answer)(db, command, options)
        except ValueError as e:  # bad states, filters, oids ...
            return _fail(name, e)
        finally:
            db.close()
        print(answer)
        return EXIT_OK
    return run


def _answer(db, command, options):
    """``command(options, conn)`` with a private tolerant connection to
    ``db`` (the commands only read; jobs whose code this process lacks
    load too: see :mod:`zc.async.tolerant`)."""
    with tolerant.connection(db) as conn:
        return command(options, conn)


def _change(db, command, options):
    """``command(options, conn)``, committed, in a tolerant connection to
    ``db`` (jobs whose code this process lacks load too: see
    :mod:`zc.async.tolerant`); tried again on conflicts (a worker may
    change the queue meanwhile).  Nothing is committed on an error."""
    with tolerant.connection(db) as conn:
        tm = conn.transaction_manager
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                answer = command(options, conn)
                tm.commit()
                return answer
            except ZODB.POSException.ConflictError:
                tm.abort()
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise


def _fail(name, error):
    print('%s: error: %s' % (name, error), file=sys.stderr)
    return EXIT_ERROR


def open_database(uri, connect_timeout=worker.DEFAULT_CONNECT_TIMEOUT,
                  read_only=True):
    """Open the database, read only when the URI scheme allows it (unless
    ``read_only`` is false)."""
    uri = worker.database_argument(uri)  # a FileStorage path: file://
    scheme = uri.split('://', 1)[0] if '://' in uri else None
    if (read_only and scheme in _READ_ONLY_SCHEMES
            and 'read_only=' not in uri):
        uri += ('&' if '?' in uri else '?') + 'read_only=1'
    return worker.open_database(uri, connect_timeout)


# ---------------------------------------------------------------- commands

def run_status(options, conn):
    """``zc-async status``: the asyncdb status tool."""
    res = monitordb.status(conn, queue=options.queue, agent=options.agent,
                           uuid=options.uuid)
    if options.json:
        return monitor.encoder.encode(res)
    return format_status(res)


def run_jobs(options, conn):
    """``zc-async jobs``: the asyncdb jobs tool (with job summaries for
    the default table)."""
    filters = {name: getattr(options, name) for name in JOB_FILTERS.values()
               if getattr(options, name) is not None}
    states = options.states or DEFAULT_STATES
    res = monitordb.jobs(conn, *states, display=options.display,
                         count=options.count, **filters)
    if options.json:
        return monitor.encoder.encode(res)
    if options.display == 'repr':
        return '\n'.join(res) if res else 'no jobs'
    if options.display == 'details':
        return '\n\n'.join(format_summary(summary) for summary in res
                           ) if res else 'no jobs'
    return format_job_table(
        [(jobid, monitordb.job(conn, *jobid)) for jobid in res])


def run_job(options, conn):
    """``zc-async job``: the asyncdb job tool, and the traceback tool with
    ``--traceback``."""
    res = monitordb.job(conn, options.oid, options.database)
    if options.traceback:
        res['traceback'] = monitordb.traceback(
            conn, options.oid, options.database, detail=options.traceback)
    if options.json:
        return monitor.encoder.encode(res)
    text = format_summary({key: value for key, value in res.items()
                           if key != 'traceback'})
    if options.traceback:
        text += '\n\n' + (res['traceback'] or 'no traceback: the job did '
                          'not fail').rstrip('\n')
    return text


# -------------------------------------------------------------- formatting

def text(value):
    """A summary value for humans: '-' for None, ISO UTC times, lists
    comma-separated."""
    if value is None:
        return '-'
    if isinstance(value, datetime.datetime):
        return monitor.Encoder().default(value)
    if isinstance(value, (list, tuple)):
        return ', '.join(text(item) for item in value) or '-'
    if isinstance(value, dict):
        return ', '.join('%s=%s' % (key, text(item))
                         for key, item in sorted(value.items())) or '-'
    return str(value)


def format_summary(summary):
    """A job summary as aligned ``key: value`` lines."""
    width = max(len(key) for key in summary) + 1
    lines = []
    for key, value in summary.items():
        if key == 'queue' and value is not None:
            value = repr(value)  # the default queue's name is ''
        value_lines = text(value).splitlines() or ['']
        lines.append('%-*s %s' % (width, key + ':', value_lines[0]))
        lines.extend(' ' * (width + 1) + line for line in value_lines[1:])
    return '\n'.join(lines)


_JOB_COLUMNS = ('OID', 'DATABASE', 'STATUS', 'QUEUE', 'AGENT', 'BEGIN AFTER',
                'JOB')


def format_job_table(rows):
    """``[(job id, summary)]`` as a table, one job a line."""
    if not rows:
        return 'no jobs'
    cells = [_JOB_COLUMNS] + [
        (str(oid), database,
         summary['status'] + (' (failed)' if summary['failed'] else ''),
         repr(summary['queue']) if summary['queue'] is not None else '-',
         text(summary['agent']), text(summary['begin after']),
         summary['repr'])
        for (oid, database), summary in rows]
    return _table(cells)


def _table(cells):
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return '\n'.join(
        '  '.join(cell.ljust(width) for cell, width in zip(row, widths)
                  ).rstrip() for row in cells)


def format_status(res):
    """The asyncdb status answer as indented lines."""
    if not res:
        return 'no queues'
    lines = []
    for name, queue in sorted(res.items()):
        lines.append('queue %r: %d pending' % (name, queue['len']))
        if not queue['dispatchers']:
            lines.append('  no activated dispatchers')
        for uuid, found in sorted(queue['dispatchers'].items()):
            lines.append('  dispatcher %s: %s, last ping %s (%s ago), ping '
                         'interval %s, death interval %s' % (
                             uuid, 'DEAD' if found['dead'] else
                             'DEGRADED' if found.get('degraded') else 'alive',
                             text(found['last ping']),
                             text(found['since ping']),
                             text(found['ping interval']),
                             text(found['ping death interval'])))
            for agent, info in sorted(found['agents'].items()):
                lines.append('    agent %r: %d of %d jobs, %s %s' % (
                    agent, info['len'], info['size'],
                    'chooser' if 'chooser' in info else 'filter',
                    text(info.get('chooser', info.get('filter')))))
                if 'claims fail' in info:
                    lines.append('      its claims fail: %s'
                                 % (info['claims fail'],))
            unloadable = found.get('unloadable jobs')
            if unloadable:
                lines.append('    cannot load %d pending job(s): %s (see '
                             'zc-async job, remove, fail)' % (
                                 len(unloadable), ', '.join(
                                     str(oid) for oid, _ in unloadable)))
    return '\n'.join(lines)
