"""A line server for the ``async`` and ``asyncdb`` monitor commands.

It replaces 1.5's zc.monitor server.  A client (``telnet`` or ``nc``)
sends a command per line, such as ``async status`` or ``asyncdb count
pending``, and gets its answer; ``help`` lists the commands and ``quit``
ends the session.  Unknown commands and bad requests get a one-line
``Error: ...``, never a traceback.

:func:`start_monitor` listens on the dispatcher's reactor, on 127.0.0.1
unless told otherwise: anyone who can connect can read job data, so keep
the port firewalled.  ``async`` runs in the reactor thread, where the
dispatcher's memory is safe; ``asyncdb`` reads the database through a
connection of its own in a reactor pool thread, so that it never holds up
the dispatcher.  Each session answers its commands in order.

Besides :data:`commands`, the server offers every command registered as a
named :class:`zc.async.interfaces.IMonitorPlugin` utility (``dispatcher.zcml``
registers ``async`` and ``asyncdb`` that way, and a site may add its own).

Three ways start it: :func:`start_monitor` from Python,
``configure.start(db, monitor_port=PORT)`` and the ``<async:monitor />`` ZCML
directive (both through a :class:`MonitorInstaller`), and ``zc-async worker
--monitor-port PORT``.
"""
import inspect
import threading
import weakref

import twisted.internet.protocol
import twisted.internet.threads
import twisted.protocols.basic
import zope.component

from .. import dispatcher as dispatcher_registry
from .. import interfaces
from .. import logs
from .. import monitor
from .. import monitordb


class _Output:
    """The connection a command writes its answer to."""

    def __init__(self):
        self.parts = []
        self.closing = False

    def write(self, text):
        self.parts.append(text)

    def close(self):
        """End the session once the answer is sent."""
        self.closing = True

    def text(self):
        return ''.join(self.parts)


def help(connection, cmd=None):
    """Get help about the server's commands.

    Usage: "help" lists the commands; "help COMMAND" explains one.
    """
    available = all_commands()
    if cmd is None:
        lines = ['Supported commands:']
        for name, command in sorted(available.items()):
            summary = (inspect.getdoc(command) or '').split('\n')[0]
            lines.append('  %s -- %s' % (name, summary))
        connection.write('\n'.join(lines) + '\n')
    elif cmd in available:
        connection.write((inspect.getdoc(available[cmd]) or cmd) + '\n')
    else:
        raise ValueError('unknown command %r; %s' % (cmd, _available()))


def interactive(connection):
    """Keep the session open for more commands (it always is).

    Sessions last until "quit" or until the client disconnects.
    """
    connection.write('Interactive mode on.  Use "quit" to exit.\n')


def quit(connection):
    """End the session."""
    connection.write('Goodbye.\n')
    connection.close()


#: Command name -> function(connection, *words).
commands = {'async': monitor.async_, 'asyncdb': monitordb.asyncdb,
            'help': help, 'interactive': interactive, 'quit': quit}

#: Commands that only read the database: run outside the reactor thread.
threaded_commands = frozenset(['asyncdb'])

# Errors a bad request causes; other errors are also logged.
_USER_ERRORS = (ValueError, LookupError, TypeError)


def all_commands():
    """The commands served: :data:`commands` and the ``IMonitorPlugin``
    utilities, by name (a utility wins over a built-in of its name)."""
    res = dict(commands)
    res.update(zope.component.getUtilitiesFor(interfaces.IMonitorPlugin))
    return res


def _available():
    return 'the commands are %s' % (', '.join(sorted(all_commands())),)


def run_command(dispatcher, line):
    """Run one command ``line`` for ``dispatcher``; ``(answer, closing)``.

    Errors become one ``Error: ...`` line.
    """
    words = line.split()
    output = _Output()
    command = all_commands().get(words[0])
    if command is None:
        text = 'Error: unknown command %r; %s\n' % (words[0], _available())
        return text, False
    try:
        with monitor.using_dispatcher(dispatcher):
            command(output, *words[1:])
    except Exception as e:
        if not isinstance(e, _USER_ERRORS):
            logs.log.error('monitor command %r failed', line, exc_info=True)
        message = ' '.join(str(e).split()) or type(e).__name__
        return 'Error: %s: %s\n' % (type(e).__name__, message), False
    return output.text(), output.closing


class MonitorProtocol(twisted.protocols.basic.LineReceiver):
    """One monitor session: a command per line, answers in order.

    Lines end with ``\\n`` (a ``\\r`` before it is ignored), so both
    telnet and nc work.
    """

    delimiter = b'\n'
    _lost = False

    def lineReceived(self, line):
        line = line.decode('utf-8', 'replace').strip()
        if not line:
            return
        dispatcher = self.factory.dispatcher
        if line.split()[0] not in threaded_commands:
            self._answer(*run_command(dispatcher, line))
            return
        # Later lines wait (buffered) until this answer is written.
        self.pauseProducing()
        reactor = dispatcher.reactor
        reactor.callInThread(self._runInThread, reactor, dispatcher, line)

    def _runInThread(self, reactor, dispatcher, line):
        answer = run_command(dispatcher, line)
        reactor.callFromThread(self._answerFromThread, *answer)

    def _answerFromThread(self, text, closing):
        if self._lost:
            return
        self._answer(text, closing)
        if not closing:
            self.resumeProducing()

    def _answer(self, text, closing):
        self.transport.write(text.encode('utf-8'))
        if closing:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self._lost = True
        super().connectionLost(reason)


class MonitorFactory(twisted.internet.protocol.ServerFactory):
    """Makes :class:`MonitorProtocol` sessions about ``dispatcher``."""

    protocol = MonitorProtocol

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher


def start_monitor(dispatcher, port, host='127.0.0.1'):
    """Serve the monitor commands about ``dispatcher`` on ``host:port``.

    Listens with the dispatcher's reactor and returns the listening port
    (``getHost().port`` tells the port chosen for ``port=0``; stop it with
    ``stopListening()`` in the reactor thread).  Call this in the reactor
    thread, before the reactor runs, or from any thread when the reactor
    runs in ``dispatcher.thread`` (as with the threaded installer).

    Listen on 127.0.0.1 (the default) unless the port is firewalled:
    anyone who can connect reads job data.  A bad port or host raises
    ValueError; a port in use, ``CannotListenError``.  Stopping the
    reactor closes the port.
    """
    port, host = check_address(port, host)
    reactor = dispatcher.reactor
    factory = MonitorFactory(dispatcher)

    def listen():
        return reactor.listenTCP(port, factory, interface=host)
    thread = dispatcher.thread
    if (thread is not None and thread.is_alive()
            and thread is not threading.current_thread()):
        res = twisted.internet.threads.blockingCallFromThread(reactor, listen)
    else:
        res = listen()
    address = res.getHost()
    logs.log.info('monitor for dispatcher %s listening on %s:%d',
                  dispatcher.UUID, address.host, address.port)
    return res


def check_address(port, host='127.0.0.1'):
    """``(port, host)`` checked: the port as an int from 0 (any free port)
    to 65535, the host a non-empty string.  ValueError naming the bad value
    otherwise; a port may be given as text (an environment variable)."""
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(port, (bool, float)) or not (
            0 <= number <= 65535):
        raise ValueError('the monitor port must be an integer from 0 to '
                         '65535, not %r' % (port,))
    if not isinstance(host, str) or not host.strip():
        raise ValueError('the monitor host must be an address such as '
                         "'127.0.0.1', not %r" % (host,))
    return number, host.strip()


class MonitorInstaller:
    """Serve the monitor for this process's dispatcher when the database
    opens (an ``IDatabaseOpenedEvent`` handler).

    Register it after the dispatcher installer (``configure.start`` and the
    ``<async:monitor />`` directive do): it serves the dispatcher that
    :func:`zc.async.dispatcher.get` finds, once per dispatcher however often
    the event fires.  :attr:`servers` maps each dispatcher served to its
    listening port.  A busy port raises ``CannotListenError`` to whoever
    fired the event.
    """

    __component_adapts__ = (interfaces.IDatabaseOpenedEvent,)

    def __init__(self, port, host='127.0.0.1'):
        self.port, self.host = check_address(port, host)
        self.servers = weakref.WeakKeyDictionary()

    def __call__(self, ev):
        dispatcher = dispatcher_registry.get()
        if dispatcher is None:
            logs.log.warning(
                'no dispatcher runs in this process, so the monitor is not '
                'started on %s:%d (register a dispatcher installer first)',
                self.host, self.port)
            return
        if dispatcher not in self.servers:
            self.servers[dispatcher] = start_monitor(
                dispatcher, self.port, self.host)
