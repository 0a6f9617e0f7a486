"""The ``zc-async replay`` and ``dry-run`` commands: a job in a sandbox.

``zc-async replay DATABASE OID [--at TID] [--pdb]`` calls a job again
against the data it saw when it last ran, and ``zc-async dry-run DATABASE
OID`` (or ``DATABASE CALLABLE [ARG...]``) runs a pending job or a callable
against the current data; both print the report of
:func:`zc.async.ops.sandbox.replay` or :func:`~zc.async.ops.sandbox.dry_run`
(``--json``: as JSON).  Nothing is written to the database.

The database is opened as by ``zc-async job`` (``file://`` and ``zeo://``
URIs read only; see :mod:`zc.async.ops.clidb`).  The exit status is 0 when the
job succeeded in the sandbox, 1 when it failed there, and 2 (with one
line on stderr) for bad input: an oid that is not a job, a job that cannot
be dry-run, a snapshot that a pack removed, a database that cannot be
opened.

:func:`add_sandbox_parsers` plugs the commands into the ``zc-async``
parser.
"""
import json
import pdb
import sys

import ZODB.POSException
import ZODB.utils

from . import clidb
from .. import interfaces
from .. import monitor
from . import sandbox
from .. import snapshot
from .. import worker
from ..monitordb import get_job

EXIT_OK = clidb.EXIT_OK
#: The exit status when the job failed in the sandbox.
EXIT_FAILED = 1
EXIT_ERROR = clidb.EXIT_ERROR

#: How an argument names a stored object: ``oid:N``.
OID_PREFIX = 'oid:'


def add_sandbox_parsers(subparsers):
    """Register the ``replay`` and ``dry-run`` subcommands."""
    replay = subparsers.add_parser(
        'replay', help='run a job again against the data it saw',
        description='Call a job again, with its arguments, against the '
                    'database as it was when the job last ran (or at '
                    '--at), in a sandbox: nothing is written to the '
                    'database.  Prints the result or the traceback, and '
                    'what the call wrote to the sandbox.')
    _add_options(replay, 'OID', "the job's integer oid")
    replay.add_argument(
        '--at', metavar='TID',
        help='replay against the data at this transaction instead: 0x and '
             'hex digits, or an ISO time (UTC unless it says otherwise)')
    replay.add_argument(
        '--pdb', action='store_true',
        help='debug a failure in the post-mortem debugger (pdb), in the '
             'sandbox')
    replay.set_defaults(run=_runner('replay', run_replay))

    dry_run = subparsers.add_parser(
        'dry-run', help='run a pending job, or a callable, without '
                        'changing the database',
        description='Run a pending job, or a callable, against the current '
                    'data in a sandbox, commit there, and print what it '
                    'would add, change and leave unreferenced.  The job '
                    'stays pending; nothing is written to the database.')
    _add_options(dry_run, 'OID|CALLABLE',
                 "a pending job's integer oid, or the dotted name of a "
                 'callable')
    dry_run.add_argument(
        'arguments', nargs='*', metavar='ARG',
        help="the callable's arguments: JSON values (other text is a "
             'string); oid:N is the stored object of oid N')
    dry_run.add_argument(
        '--kwargs', metavar='JSON',
        help="the callable's keyword arguments, a JSON object")
    dry_run.set_defaults(run=_runner('dry-run', run_dry_run))


def _add_options(parser, target, target_help):
    clidb._add_common(parser)
    parser.add_argument('target', metavar=target, help=target_help)
    parser.add_argument(
        '--database', metavar='NAME',
        help='the name of the database holding the job (and oid:N '
             'objects), in a multi-database set-up')


def _runner(name, command):
    """The runner of subcommand ``name``: open the database, print the
    report of ``command(options, conn)`` or one error line; return the
    exit status."""
    name = 'zc-async ' + name

    def run(options):
        try:
            worker.import_modules(options.imports)
            db = clidb.open_database(options.uri, options.connect_timeout)
        except worker.WorkerError as e:
            return clidb._fail(name, e)
        try:
            report = clidb._answer(db, command, options)
        except (ValueError, TypeError, interfaces.AsyncError,
                ZODB.POSException.POSError) as e:
            return clidb._fail(name, e)
        finally:
            db.close()
        print(monitor.encoder.encode(report.as_dict()) if options.json
              else report.text())
        return EXIT_FAILED if report.failed else EXIT_OK
    return run


def _connection(conn, database):
    """The connection to the database named ``database`` (default:
    ``conn``'s own)."""
    if database is None:
        return conn
    try:
        return conn.get_connection(database)
    except KeyError:
        raise ValueError('unknown database %r' % (database,)) from None


def run_replay(options, conn):
    """``zc-async replay``: the report of sandbox.replay."""
    job = get_job(conn, options.target, options.database)
    at = None if options.at is None else snapshot.parse_tid(options.at)
    return sandbox.replay(job._p_jar.db(), job._p_oid, at,
                          _debug if options.pdb else None)


def _debug(traceback):
    print('The job failed in the sandbox: post-mortem debugging (the report '
          'follows when you quit).', flush=True)
    pdb.post_mortem(traceback)
    sys.stdout.flush()


def run_dry_run(options, conn):
    """``zc-async dry-run``: the report of sandbox.dry_run, for a job or
    a callable."""
    if options.target.isdigit():
        if options.arguments or options.kwargs is not None:
            raise ValueError('a job is dry-run with its own arguments: give '
                             'no ARG or --kwargs with an OID')
        job = get_job(conn, options.target, options.database)
        return sandbox.dry_run(conn.db(), job)
    own = _connection(conn, options.database)
    args = [_argument(own, text) for text in options.arguments]
    kwargs = {}
    if options.kwargs is not None:
        kwargs = json.loads(options.kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError('--kwargs must be a JSON object, not %r'
                             % (options.kwargs,))
        kwargs = {key: _stored(own, value) for key, value in kwargs.items()}
    return sandbox.dry_run(conn.db(), options.target, *args, **kwargs)


def _argument(conn, text):
    """An ARG: a JSON value, the object of ``oid:N``, or the text."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return _stored(conn, value)


def _stored(conn, value):
    """The stored object ``value`` names if it is ``oid:N``; else
    ``value``."""
    if not (isinstance(value, str) and value.startswith(OID_PREFIX)):
        return value
    oid = monitor.parse_int(value[len(OID_PREFIX):], 'oid')
    try:
        res = conn.get(ZODB.utils.p64(oid))
        res._p_activate()
    except ZODB.POSException.POSKeyError:
        raise ValueError('no object with oid %d in database %r' % (
            oid, conn.db().database_name)) from None
    return res
