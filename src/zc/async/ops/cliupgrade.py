"""The ``zc-async upgrade`` command: step 2 of upgrading a 1.5 database.

It opens the database (any ZODB URI or ZConfig file, as the other
commands), runs :func:`zc.async.upgrade.upgrade` and prints its report:
what the database holds, what was converted, what could not be loaded.
With ``--check`` it opens the database read only where the URI allows it
and commits nothing.  Exit status: 0; 1 when something could not be
loaded, when the database has no queues, or, with ``--check``, when
something needs converting; 2 when the database cannot be opened (or is
a FileStorage that zodbupdate did not convert yet).

:func:`add_upgrade_parsers` plugs the command into the ``zc-async``
parser.
"""
import json
import urllib.parse

from . import clidb
from .. import upgrade
from .. import worker

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_ERROR = clidb.EXIT_ERROR

#: The first bytes of a FileStorage written by Python 2's ZODB.
PYTHON2_FILESTORAGE = b'FS21'


def add_upgrade_parsers(subparsers):
    """Register the ``upgrade`` subcommand."""
    parser = subparsers.add_parser(
        'upgrade', help='convert a 1.5 database (after zodbupdate)',
        description='Step 2 of upgrading a zc.async 1.5 database, after '
                    '"zodbupdate --convert-py3 --encoding utf-8": convert '
                    "1.5's completed-job stores and keys, load every job, "
                    'and report what was done and what could not be '
                    'loaded.  Running it again does nothing more.')
    clidb._add_common(parser)
    parser.add_argument(
        '--check', action='store_true',
        help='only report what would be converted; commit nothing')
    parser.set_defaults(run=run_upgrade)
    return parser


def run_upgrade(options):
    """The ``upgrade`` subcommand; returns the exit status."""
    name = 'zc-async upgrade'
    try:
        _refuse_python2_file(options.uri)
        worker.import_modules(options.imports)
        db = clidb.open_database(options.uri, options.connect_timeout,
                                 read_only=options.check)
    except worker.WorkerError as e:
        return clidb._fail(name, e)
    try:
        report = clidb._answer(
            db, lambda options, conn: upgrade.upgrade(conn, options.check),
            options)
    finally:
        db.close()
    if options.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    if (report.unloadable or not report.queues
            or (options.check and report.conversions)):
        return EXIT_ATTENTION
    return EXIT_OK


def _refuse_python2_file(uri):
    """A FileStorage still in Python 2's format needs step 1 first."""
    if not uri.startswith('file://'):
        return
    path = urllib.parse.urlsplit(uri).path
    try:
        with open(path, 'rb') as f:
            magic = f.read(len(PYTHON2_FILESTORAGE))
    except OSError:
        return  # opening it says what is wrong
    if magic == PYTHON2_FILESTORAGE:
        raise worker.WorkerError(
            '%s is a Python 2 FileStorage: convert it first with '
            '"zodbupdate --convert-py3 --encoding utf-8 --file %s" (see '
            'the chapter "Upgrading a 1.5 database")' % (path, path))
