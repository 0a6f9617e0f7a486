"""The ``zc-async worker`` command runs one standalone dispatcher process.

The worker opens a database from a ZODB URI (``file://``, ``zeo://``,
RelStorage's ``postgres://`` ...) or from a ZConfig file with a ``<zodb>``
section, imports the application modules that job pickles refer to, and runs
a :class:`zc.async.dispatcher.Dispatcher` on the main Twisted reactor until
SIGTERM or SIGINT.  The first signal stops the dispatcher warmly (see
:mod:`zc.async.shutdown`): it claims no more jobs, lets the running ones
finish for up to ``--shutdown-timeout`` seconds, then deactivates its
records in every queue (the jobs still running are queued for
``handleInterrupt``: their retry policy decides) and the reactor stops.  A
second signal stops it at once.  The worker holds a lock on its UUID file
while it runs (see :mod:`zc.async.instanceuuid`), so that the next process
of the same instance takes over at once after a crash.

Problems found before the reactor starts (an unknown URI scheme, an
unreachable server, a missing ZConfig file, a module that cannot be
imported, an unreadable UUID file) print one line on stderr and exit with
:data:`EXIT_ERROR`.

Use it as ``zc-async worker ...`` or ``python -m zc.async.worker ...``;
:func:`add_worker_parser` and :func:`worker_main` plug it into the
``zc-async`` command.
"""
import argparse
import datetime
import importlib
import logging
import os
import signal
import sys

import transaction

from . import interfaces
from . import shutdown

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

#: Seconds to wait for a ZEO or PostgreSQL server before giving up, unless
#: the URI sets its own limit.
DEFAULT_CONNECT_TIMEOUT = 30

#: Seconds a stopping worker waits for its running jobs by default.
DEFAULT_SHUTDOWN_TIMEOUT = 30

DESCRIPTION = (
    'Run a zc.async dispatcher on a ZODB database until SIGTERM or SIGINT, '
    'which let the running jobs finish (up to --shutdown-timeout) and '
    'deactivate it cleanly; a second signal stops it at once.')
LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s %(message)s'

log = logging.getLogger('zc.async.worker')


class WorkerError(Exception):
    """The worker cannot start; the message is the one line it prints."""


# ----------------------------------------------------------------- options

def add_arguments(parser):
    """Add the worker's arguments and options to an argparse parser."""
    parser.add_argument(
        'database',
        help='a ZODB URI (file://PATH, zeo://HOST:PORT, postgres://... with '
             'RelStorage, zconfig://PATH), the path of a FileStorage file '
             'or the path of a ZConfig file with a <zodb> section')
    parser.add_argument(
        '--uuid-file', metavar='PATH',
        help='file holding this instance\'s UUID; created if missing '
             '(default: $ZC_ASYNC_UUID, else ./uuid.txt). Every worker '
             'process needs its own.')
    parser.add_argument(
        '--poll-interval', metavar='SECONDS', type=_positive_float,
        default=5, help='seconds between polls (default: %(default)s)')
    parser.add_argument(
        '--agent-name', metavar='NAME', default='main',
        help='name of the agent added to this dispatcher (default: '
             '%(default)s)')
    parser.add_argument(
        '--agent-size', metavar='N', type=_positive_int, default=3,
        help='jobs the agent runs at once (default: %(default)s)')
    parser.add_argument(
        '--no-agent', dest='agent', action='store_false',
        help='add no agent; use the agents configured in the database')
    parser.add_argument(
        '--queue', metavar='NAME', dest='queues', action='append',
        help='serve this queue (repeatable; default: every queue). '
             "The default queue's name is the empty string.")
    parser.add_argument(
        '--install', action='store_true',
        help='create the queues mapping and the --queue queues (default: '
             "the '' queue) when they are missing, and a missing "
             'FileStorage file')
    parser.add_argument(
        '--import', metavar='MODULE', dest='imports', action='append',
        default=[],
        help='import this module first, so job pickles resolve '
             '(repeatable)')
    parser.add_argument(
        '--ping-interval', metavar='SECONDS', type=_positive_float,
        help="set this dispatcher's ping interval in the database "
             '(default: keep the stored value, 30 s when new)')
    parser.add_argument(
        '--ping-death-interval', metavar='SECONDS', type=_positive_float,
        help='set after how long without a ping siblings declare this '
             'dispatcher dead (default: keep the stored value, 60 s when '
             'new)')
    parser.add_argument(
        '--shutdown-timeout', metavar='SECONDS', type=_not_negative_float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        help='on SIGTERM or SIGINT, wait up to this long for the running '
             'jobs to finish before handing them back (default: '
             '%(default)s; 0: hand them back at once)')
    parser.add_argument(
        '--time-limit', metavar='SECONDS', type=_positive_float,
        help='stop the jobs of the added agent that run longer than this, '
             'unless they have a time_limit of their own (default: none)')
    parser.add_argument(
        '--batch-size', metavar='N', type=_positive_int, default=1,
        help='small jobs of the added agent that a worker thread runs in '
             'one transaction, each in a savepoint (default: %(default)s; '
             'see "Batches" in the deployment docs)')
    parser.add_argument(
        '--connect-timeout', metavar='SECONDS', type=_positive_int,
        default=DEFAULT_CONNECT_TIMEOUT,
        help='seconds to wait for a ZEO or PostgreSQL server at start-up '
             '(default: %(default)s)')
    parser.add_argument(
        '--metrics-port', metavar='PORT', type=int,
        help='serve Prometheus metrics at http://127.0.0.1:PORT/metrics '
             '(needs the metrics extra; default: no metrics)')
    parser.add_argument(
        '--log-level', metavar='LEVEL', type=str.upper, default='INFO',
        choices=('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'),
        help='DEBUG, INFO, WARNING, ERROR or CRITICAL (default: '
             '%(default)s)')
    parser.add_argument(
        '--log-file', metavar='PATH',
        help='append the log to this file (default: stderr)')
    add_dashboard_arguments(parser)
    add_monitor_arguments(parser)
    return parser


def add_worker_parser(subparsers):
    """Register the ``worker`` subcommand; it runs :func:`worker_main`."""
    parser = subparsers.add_parser(
        'worker', help='run a standalone dispatcher process',
        description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(run=worker_main)
    return parser


def build_parser(prog='zc-async worker'):
    """The worker's own parser, for ``python -m zc.async.worker``."""
    return add_arguments(argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION))


def _positive_float(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(
            'expected a number greater than 0, got %r' % text)
    return value


def _not_negative_float(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(
            'expected a number of 0 or more, got %r' % text)
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            'expected an integer greater than 0, got %r' % text)
    return value


# ------------------------------------------------------------- entry points

def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) and run; returns the exit
    code."""
    return worker_main(build_parser().parse_args(argv))


def worker_main(options):
    """Run the worker for parsed options; print start-up problems as one
    line.  Returns the exit code."""
    try:
        return run_worker(options)
    except WorkerError as e:
        print('zc-async worker: error: %s' % e, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # Ctrl-C before the reactor took over
        print('zc-async worker: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


def run_worker(options):
    """Open the database, start the dispatcher and run the reactor until a
    signal stops it.  Raises :class:`WorkerError` for start-up problems."""
    uuid = read_uuid(options.uuid_file)
    import_modules(options.imports)
    opener = database_opener(options.database, options.connect_timeout,
                             create=options.install)
    # Logging starts only now, so that bad input has no side effects, and
    # before opening, so that an operator sees the attempts to connect.
    configure_logging(options.log_level, options.log_file)
    lock_uuid_file(uuid)
    db = _open(opener, options.database)
    try:
        from twisted.internet import reactor
        dispatcher = start_dispatcher(db, reactor, uuid, options)
        start_dashboard(db, reactor, dispatcher, options)
        start_monitor(dispatcher, options)
        # Ours, not Twisted's (a second signal stops at once), and from now
        # on: a signal that comes before the reactor runs stops it as soon
        # as it does.
        install_signal_handlers(reactor, dispatcher)
        reactor.run(installSignalHandlers=False)
    finally:
        db.close()
    log.info('worker %s stopped', uuid)
    return EXIT_OK


# --------------------------------------------------------------- start-up

def configure_logging(level, path=None):
    """Send log records of ``level`` and above (Twisted's too) to ``path``
    or stderr."""
    try:
        handler = (logging.FileHandler(path) if path
                   else logging.StreamHandler(sys.stderr))
    except OSError as e:
        raise WorkerError('cannot open log file %r: %s' % (path, e))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo(
        [STDLibLogObserver()], redirectStandardIO=False)


def read_uuid(path=None):
    """Return this instance's UUID, read from (or created in) ``path``.

    The path also goes into ``$ZC_ASYNC_UUID`` so that
    :mod:`zc.async.instanceuuid` agrees when it is imported later.
    """
    from . import instanceuuid
    if path:
        path = os.environ[instanceuuid.key] = os.path.abspath(path)
    try:
        return instanceuuid.getUUID(path)
    except ValueError as e:  # the message names the file
        raise WorkerError(str(e))
    except OSError as e:
        raise WorkerError('cannot read or create the UUID file: %s' % e)


def lock_uuid_file(uuid):
    """Lock the UUID file (see :func:`zc.async.instanceuuid.lock`); say so
    when another process holds the lock."""
    from . import instanceuuid
    held = instanceuuid.lock(uuid)
    if not held.held:
        log.warning(
            'the UUID file %s is locked by another process: two processes '
            'share UUID %s?  This worker claims nothing until that one '
            'deactivates or dies', held.path, uuid)


def install_signal_handlers(reactor, dispatcher):
    """Stop on SIGTERM and SIGINT: warmly the first time (the reactor
    stops once the dispatcher has), at once the next times."""
    received = []

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        received.append(name)
        if len(received) == 1:
            log.info('received %s: stopping; running jobs get up to %s '
                     'seconds to finish (send %s again to stop at once)',
                     name, dispatcher.shutdown_timeout, name)
            reactor.callFromThread(shutdown.end_reactor, reactor)
        else:
            log.info('received %s again: stopping at once', name)
            reactor.callFromThread(dispatcher.stop, 0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def import_modules(names):
    """Import the application modules that job pickles refer to."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise WorkerError('cannot import %r (--import): %s' % (name, e))


def open_database(uri_or_zconfig_path,
                  connect_timeout=DEFAULT_CONNECT_TIMEOUT, create=False):
    """Open a ZODB database from a URI, a FileStorage path or a ZConfig
    file path.

    A ``zeo://`` URI without ``wait_timeout`` (a ``postgres://`` one
    without ``connect_timeout``) waits ``connect_timeout`` seconds for the
    server.  A missing FileStorage is created only with ``create`` (or
    ``create=true`` in the URI; see :mod:`zc.async.ops.dburi`).  Any failure
    raises :class:`WorkerError` naming the database and the reason.
    """
    return _open(database_opener(uri_or_zconfig_path, connect_timeout,
                                 create), uri_or_zconfig_path)


def database_argument(text, create=False):
    """The URI or ZConfig path that the database argument ``text``
    means (see :mod:`zc.async.ops.dburi`); WorkerError if it is wrong."""
    from .ops import dburi
    try:
        return dburi.checked(text, create)
    except ValueError as e:
        raise WorkerError(str(e))


def database_opener(uri_or_zconfig_path,
                    connect_timeout=DEFAULT_CONNECT_TIMEOUT, create=False):
    """Check the database argument; return a function that opens it.

    Raises :class:`WorkerError` for an unknown scheme, a missing file or a
    URI that names no server.
    """
    uri_or_zconfig_path = database_argument(uri_or_zconfig_path, create)
    if '://' in uri_or_zconfig_path:
        return _opener_from_uri(
            _with_connect_timeout(uri_or_zconfig_path, connect_timeout))
    return _opener_from_zconfig(uri_or_zconfig_path)


def _open(opener, name):
    import ZODB.POSException
    import ZODB.utils
    try:
        try:
            return opener()
        except ZODB.POSException.ConflictError as e:
            if e.oid != ZODB.utils.z64:
                raise
            # Two processes found the database empty and both created its
            # root object: the other one's is there now.
            return opener()
    except Exception as e:
        # Storages fail in many ways (OSError, LockError, ZEO's
        # ClientDisconnected, ZConfig errors, database drivers' errors);
        # the operator needs the reason, not a traceback.
        raise WorkerError('cannot open database %r: %s: %s' % (
            name, type(e).__name__, ' '.join(str(e).split())))


def _opener_from_uri(uri):
    import zodburi
    import ZODB
    try:
        storage_factory, dbkw = zodburi.resolve_uri(uri)
    except zodburi.NoResolverForScheme:
        scheme = uri.split('://', 1)[0]
        hint = (' (install RelStorage: zc.async[relstorage])'
                if scheme in ('postgres', 'postgresql', 'mysql', 'oracle',
                              'sqlite3') else '')
        raise WorkerError('unknown database URI scheme %r in %r%s' % (
            scheme, uri, hint))
    except (KeyError, ValueError) as e:
        raise WorkerError('bad database URI %r: %s' % (uri, e))

    def open_():
        storage = storage_factory()
        try:
            return ZODB.DB(storage, **dbkw)
        except BaseException:
            storage.close()  # as ZODB.config does
            raise
    return open_


def _opener_from_zconfig(path):
    if not os.path.isfile(path):
        raise WorkerError(
            'no such ZConfig file %r (a database URI needs a scheme, such '
            'as file:// or zeo://)' % path)
    import ZODB.config
    return lambda: ZODB.config.databaseFromURL(path)


#: URI scheme -> the query parameter that bounds the wait for a server.
_CONNECT_TIMEOUT_PARAMETERS = {
    'zeo': 'wait_timeout',  # ZEO's ClientStorage
    'postgres': 'connect_timeout',  # RelStorage's PostgreSQL adapter
}


def _with_connect_timeout(uri, seconds):
    """Bound the wait for the database server, unless the URI already
    does."""
    parameter = _CONNECT_TIMEOUT_PARAMETERS.get(uri.split('://', 1)[0])
    if parameter is None or parameter + '=' in uri:
        return uri
    return '%s%s%s=%d' % (uri, '&' if '?' in uri else '?', parameter,
                          seconds)


def start_dispatcher(db, reactor, uuid, options):
    """Register what the dispatcher needs and activate it on ``reactor``.

    Returns the dispatcher; it polls once the reactor runs.
    """
    import zope.component
    from . import configure, subscribers
    from .dispatcher import Dispatcher
    configure.base()
    # The process's IUUID must be the worker's UUID, whatever UUID file an
    # earlier import of zc.async.instanceuuid may have read.
    zope.component.provideUtility(uuid, interfaces.IUUID)
    if options.install:
        subscribers.QueueInstaller(queues=tuple(options.queues or ('',)))(
            interfaces.DatabaseOpened(db))
    else:
        _warn_if_no_queues(db)
    if options.agent:
        zope.component.provideHandler(subscribers.AgentInstaller(
            options.agent_name, size=options.agent_size,
            queue_names=options.queues,
            time_limit=_seconds(options.time_limit),
            batch_size=options.batch_size))
    if options.ping_interval or options.ping_death_interval:
        zope.component.provideHandler(PingSettings(
            uuid, options.ping_interval, options.ping_death_interval))
    dispatcher = Dispatcher(db, reactor, poll_interval=options.poll_interval,
                            uuid=uuid)
    dispatcher.shutdown_timeout = options.shutdown_timeout
    if options.metrics_port is not None:
        _serve_metrics(dispatcher, options.metrics_port)
    dispatcher.activate()
    log.info('worker %s started (poll interval %s s)',
             uuid, options.poll_interval)
    return dispatcher


def _seconds(value):
    return None if value is None else datetime.timedelta(seconds=value)


def _serve_metrics(dispatcher, port):
    from .ops import metrics
    try:
        metrics.install_metrics(dispatcher)
        metrics.start_metrics_server(port)
    except (metrics.MetricsUnavailable, OSError) as e:
        raise WorkerError('cannot serve metrics on port %d: %s' % (port, e))
    log.info('serving metrics at http://127.0.0.1:%d/metrics', port)


def _warn_if_no_queues(db):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        if interfaces.KEY not in conn.root():
            log.warning(
                'the database has no %r queues yet; polling until an '
                'application installs them (or restart with --install)',
                interfaces.KEY)
    finally:
        tm.abort()
        conn.close()


class PingSettings:
    """On activation of this worker's records, store its ping intervals
    (seconds; None keeps the stored value)."""

    __component_adapts__ = (interfaces.IDispatcherActivated,)

    def __init__(self, uuid, ping_interval=None, ping_death_interval=None):
        self.uuid = uuid
        self.ping_interval = ping_interval
        self.ping_death_interval = ping_death_interval

    def __call__(self, event):
        da = event.object
        if da.UUID != self.uuid:
            return
        if self.ping_interval:
            da.ping_interval = datetime.timedelta(seconds=self.ping_interval)
        if self.ping_death_interval:
            da.ping_death_interval = datetime.timedelta(
                seconds=self.ping_death_interval)


# -------------------------------------------------------------- dashboard

#: The environment variable that may hold the dashboard's actions token
#: (safer than --actions-token, which other users see in ``ps``).
ACTIONS_TOKEN_VARIABLE = 'ZC_ASYNC_ACTIONS_TOKEN'


def add_dashboard_arguments(parser):
    """The options of the web dashboard (see :mod:`zc.async.ops.web`)."""
    parser.add_argument(
        '--dashboard-port', metavar='PORT', type=int,
        help='serve the web dashboard on this port (default: no '
             'dashboard; 0 picks a free port)')
    parser.add_argument(
        '--dashboard-host', metavar='HOST', default='127.0.0.1',
        help='address the dashboard listens on (default: %(default)s; '
             'anyone who can connect can read job data)')
    parser.add_argument(
        '--actions-token', metavar='TOKEN',
        default=os.environ.get(ACTIONS_TOKEN_VARIABLE),
        help='enable the dashboard\'s retry, cancel and abort actions for '
             'requests with the header "Authorization: Bearer TOKEN" (at '
             'least 8 characters; default: $%s, else read-only)'
             % (ACTIONS_TOKEN_VARIABLE,))
    parser.add_argument(
        '--allow-replay', action='store_true',
        help='let the dashboard replay failed jobs and dry-run pending ones '
             'in a sandbox that writes nothing (runs job code in this '
             'process)')


def start_dashboard(db, reactor, dispatcher, options):
    """Serve the dashboard if ``--dashboard-port`` asks for it."""
    port = getattr(options, 'dashboard_port', None)
    if port is None:
        return None
    from .ops import web
    try:
        return web.start_dashboard(
            db, reactor, port, options.dashboard_host, dispatcher,
            options.actions_token, getattr(options, 'allow_replay', False))
    except Exception as e:  # a busy port, a bad address or token
        raise WorkerError('cannot start the dashboard on %s:%s: %s' % (
            options.dashboard_host, port, e))


# ---------------------------------------------------------------- monitor

def add_monitor_arguments(parser):
    """The options of the monitor line server (see
    :mod:`zc.async.ops.monitorserver`)."""
    parser.add_argument(
        '--monitor-port', metavar='PORT', type=_port,
        help='serve the "async" and "asyncdb" monitor commands on this '
             'port (default: no monitor; 0 picks a free port)')
    parser.add_argument(
        '--monitor-host', metavar='HOST', default='127.0.0.1',
        help='address the monitor listens on (default: %(default)s; '
             'anyone who can connect can read job data)')


def _port(text):
    from .ops import monitorserver
    try:
        return monitorserver.check_address(text)[0]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def start_monitor(dispatcher, options):
    """Serve the monitor if ``--monitor-port`` asks for it; return the
    listening port (None without the option)."""
    port = getattr(options, 'monitor_port', None)
    if port is None:
        return None
    from .ops import monitorserver
    try:
        return monitorserver.start_monitor(
            dispatcher, port, options.monitor_host)
    except Exception as e:  # a busy port, a bad address
        raise WorkerError('cannot start the monitor on %s:%s: %s' % (
            options.monitor_host, port, e))


if __name__ == '__main__':
    sys.exit(main())
