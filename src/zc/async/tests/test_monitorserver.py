"""Tests of zc.async.ops.monitorserver: the monitor's line server.

The protocol is driven through Twisted's string transport with a
dispatcher on the virtual-time reactor; then a real server on a real
reactor thread is used over TCP on a free loopback port.
"""
import inspect
import json
import socket
import threading
import time
import unittest

import twisted.internet.address
import twisted.internet.defer
import twisted.internet.error
import twisted.internet.testing
import twisted.python.failure
import zope.component

import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.monitor as monitor
import zc.asynchronous.monitordb as monitordb
import zc.asynchronous.ops.monitorserver as monitorserver
import zc.asynchronous.testing as testing
from zc.asynchronous.tests.live import DispatcherTestCase
from zc.asynchronous.tests.monitoring import MonitorTestCase, UUID


def succeed(*values):
    return sum(values)


class ProtocolTests(MonitorTestCase):

    def setUp(self):
        super().setUp()
        factory = monitorserver.MonitorFactory(self.dispatcher)
        self.protocol = factory.buildProtocol(
            twisted.internet.address.IPv4Address('TCP', '127.0.0.1', 9))
        self.transport = twisted.internet.testing.StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data):
        self.protocol.dataReceived(data)
        return self.answer()

    def answer(self):
        text = self.transport.value().decode('utf-8')
        self.transport.clear()
        return text

    def pump(self, seconds=5):
        """Run the reactor's calls until an answer arrives."""
        deadline = time.monotonic() + seconds
        while not self.transport.value() and time.monotonic() < deadline:
            if not self.reactor.time_passes():
                time.sleep(0.002)
        return self.answer()

    def test_async_commands(self):
        self.assertEqual(self.send(b'async UUID\r\n'), str(UUID) + '\n')
        status = json.loads(self.send(b'  async   status \n'))
        self.assertEqual(status['status'], 'STOPPED')
        self.assertEqual(self.send(b'async utcnow\nasync UUID\n'),
                         '2006-08-10T15:44:22.000211Z\n%s\n' % (UUID,))
        self.assertEqual(self.send(b'async\n'),
                         inspect.getdoc(monitor.async_) + '\n')

    def test_empty_lines_are_ignored(self):
        self.assertEqual(self.send(b'\n\r\n   \n'), '')
        self.assertFalse(self.transport.disconnecting)

    def test_help(self):
        text = self.send(b'help\n')
        self.assertEqual(text, '\n'.join([
            'Supported commands:',
            '  async -- Monitor zc.async activity in this process.',
            '  asyncdb -- Monitor and introspect zc.async activity in the '
            'database.',
            '  help -- Get help about the server\'s commands.',
            '  interactive -- Keep the session open for more commands (it '
            'always is).',
            '  quit -- End the session.', '']))
        text = self.send(b'help asyncdb\n')
        self.assertTrue(text.startswith(
            'Monitor and introspect zc.async activity in the database.\n\n'
            "To see a list of asyncdb tools, use 'asyncdb help'."))
        self.assertEqual(
            self.send(b'help nope\n'),
            "Error: ValueError: unknown command 'nope'; the commands are "
            "async, asyncdb, help, interactive, quit\n")

    def test_errors_are_one_line(self):
        self.assertEqual(
            self.send(b'bogus 1 2\n'),
            "Error: unknown command 'bogus'; the commands are async, "
            "asyncdb, help, interactive, quit\n")
        self.assertEqual(
            self.send(b'async status uuid:x\n'),
            "Error: ValueError: 'x' is not a UUID (nor THIS)\n")
        self.assertEqual(
            self.send(b'async poll at:1 2\n'),
            'Error: ValueError: placeful modifiers must come before named '
            'modifiers\n')
        self.assertEqual(
            self.send(b'async status color:red\n'),
            "Error: ValueError: wrong modifiers for tool 'status': got an "
            "unexpected keyword argument 'color'\n")
        self.assertEqual(self.send(b'async nope\n'),
                         '[Unknown tool name for this command: nope]\n')
        self.assertEqual(self.send(b'interactive\n'),
                         'Interactive mode on.  Use "quit" to exit.\n')
        self.assertEqual(self.send(b'quit now\n'),
                         "Error: TypeError: quit() takes 1 positional "
                         "argument but 2 were given\n")
        self.assertEqual(self.world.log.records, [])

    def test_unexpected_errors_are_logged(self):
        def broken(connection):
            """Break."""
            raise RuntimeError('the\nend')
        monitorserver.commands['broken'] = broken
        self.addCleanup(monitorserver.commands.pop, 'broken')
        self.assertEqual(self.send(b'broken\n'),
                         'Error: RuntimeError: the end\n')
        record, = self.world.log.records
        self.assertEqual(record.getMessage(),
                         "monitor command 'broken' failed")
        self.assertIsNotNone(record.exc_info)

    def test_monitor_plugin_utilities_are_commands_too(self):
        def hello(connection, name='world'):
            """Say hello.

            Usage: "hello [NAME]".
            """
            connection.write('Hello, %s!\n' % (name,))
        zope.component.provideUtility(
            hello, interfaces.IMonitorPlugin, name='hello')
        # As dispatcher.zcml registers them: the same functions.
        zope.component.provideUtility(
            monitor.async_, interfaces.IMonitorPlugin, name='async')
        self.assertEqual(self.send(b'hello\nhello you\n'),
                         'Hello, world!\nHello, you!\n')
        self.assertIn('  hello -- Say hello.\n', self.send(b'help\n'))
        self.assertEqual(self.send(b'help hello\n'),
                         'Say hello.\n\nUsage: "hello [NAME]".\n')
        self.assertEqual(self.send(b'async UUID\n'), str(UUID) + '\n')
        self.assertEqual(
            self.send(b'nope\n'),
            "Error: unknown command 'nope'; the commands are async, "
            "asyncdb, hello, help, interactive, quit\n")

    def test_undecodable_bytes(self):
        self.assertEqual(self.send(b'async \xff\n'),
                         '[Unknown tool name for this command: \ufffd]\n')

    def test_quit(self):
        self.assertEqual(self.send(b'quit\nasync UUID\n'), 'Goodbye.\n')
        self.assertTrue(self.transport.disconnecting)

    def test_asyncdb_runs_in_a_thread_and_answers_in_order(self):
        self.world.put(succeed, 1)
        self.assertEqual(self.send(b'asyncdb count pending\nasync UUID\n'),
                         '')  # both wait for the database answer
        self.assertEqual(self.pump(), '1\n%s\n' % (UUID,))
        self.assertEqual(
            self.send(b'asyncdb count sleeping\n') or self.pump(),
            'Error: ValueError: Available states are pending, assigned, '
            'active, callbacks, completed, succeeded, failed (unknown: '
            'sleeping)\n')
        self.assertEqual(self.send(b'asyncdb\n') or self.pump(),
                         inspect.getdoc(monitordb.asyncdb) + '\n')

    def test_no_answer_after_the_client_left(self):
        self.send(b'asyncdb count pending\n')
        self.protocol.connectionLost(
            twisted.python.failure.Failure(
                twisted.internet.error.ConnectionDone()))
        self.assertEqual(self.pump(seconds=0.5), '')


class TCPTests(DispatcherTestCase):
    """A real server on a live dispatcher's reactor, and a real client."""

    def setUp(self):
        super().setUp()
        self.running = self.start()
        self.port = monitorserver.start_monitor(self.running.dispatcher, 0)
        self.ports = [self.port]

    def tearDown(self):
        for port in self.ports:  # while the reactor runs
            self.stop_listening(port)
        super().tearDown()

    def stop_listening(self, port):
        """Stop ``port`` in the reactor thread and wait until it is closed.
        """
        closed = threading.Event()
        self.running.call(lambda: twisted.internet.defer.maybeDeferred(
            port.stopListening).addBoth(lambda ignored: closed.set()))
        self.assertTrue(closed.wait(10))

    def session(self, *lines):
        """Send ``lines`` and ``quit``; everything the server answered."""
        address = self.port.getHost()
        return session((address.host, address.port), *lines)

    def test_listens_on_loopback_only_by_default(self):
        address = self.port.getHost()
        self.assertEqual(address.host, '127.0.0.1')
        self.assertNotEqual(address.port, 0)
        self.assertIn('monitor for dispatcher %s listening on 127.0.0.1:%d'
                      % (self.uuid, address.port), self.messages('INFO'))

    def test_a_busy_port_is_a_clear_error(self):
        with self.assertRaises(twisted.internet.error.CannotListenError) as e:
            monitorserver.start_monitor(self.running.dispatcher,
                                        self.port.getHost().port)
        self.assertIn('127.0.0.1:%d' % (self.port.getHost().port,),
                      str(e.exception))

    def test_a_session(self):
        job = self.put(succeed, 20, 22)
        testing.wait_for_result(job)
        text = self.session('async UUID', 'asyncdb count completed uuid:THIS',
                            'asyncdb lastcompleted', 'async nope',
                            'nonsense')
        lines = text.split('\n')
        self.assertEqual(lines[:2], [str(self.uuid), '1'])
        summary_end = lines.index('}')
        summary = json.loads('\n'.join(lines[2:summary_end + 1]))
        self.assertEqual((summary['result'], summary['status']),
                         ('42', 'completed'))
        self.assertEqual(lines[summary_end + 1:], [
            '[Unknown tool name for this command: nope]',
            "Error: unknown command 'nonsense'; the commands are async, "
            "asyncdb, help, interactive, quit", ''])

    def test_status_comes_from_the_reactor_thread(self):
        status = json.loads(self.session('async status'))
        self.assertEqual(status['status'], 'RUNNING')
        self.assertEqual(status['uuid'], str(self.uuid))
        self.assertEqual(status['poll interval'], {'seconds': 0.5})

    def test_stop_listening(self):
        address = self.port.getHost()
        self.stop_listening(self.port)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((address.host, address.port),
                                     timeout=10).close()

    def test_starting_in_the_reactor_thread(self):
        port = self.running.call(monitorserver.start_monitor,
                                 self.running.dispatcher, 0, '127.0.0.1')
        self.ports.append(port)
        self.assertNotEqual(port.getHost().port, self.port.getHost().port)


class CheckAddressTests(unittest.TestCase):

    def test_good_addresses(self):
        self.assertEqual(monitorserver.check_address(8081),
                         (8081, '127.0.0.1'))
        self.assertEqual(monitorserver.check_address('0', ' ::1 '),
                         (0, '::1'))
        self.assertEqual(monitorserver.check_address(65535, '0.0.0.0'),
                         (65535, '0.0.0.0'))

    def test_bad_ports_and_hosts(self):
        for port in (-1, 65536, 'http', '', None, 1.5, True):
            with self.assertRaises(ValueError) as caught:
                monitorserver.check_address(port)
            self.assertEqual(
                str(caught.exception), 'the monitor port must be an integer '
                'from 0 to 65535, not %r' % (port,))
        for host in ('', '  ', None, 127):
            with self.assertRaises(ValueError) as caught:
                monitorserver.check_address(8081, host)
            self.assertIn('the monitor host must be an address such as '
                          "'127.0.0.1', not %r" % (host,),
                          str(caught.exception))

    def test_start_monitor_checks_first(self):
        with self.assertRaises(ValueError):
            monitorserver.start_monitor(None, 70000)


def session(address, *lines):
    """Send ``lines`` and ``quit`` to the server at ``address`` (host,
    port); everything it answered before "Goodbye."."""
    with socket.create_connection(address, timeout=10) as client:
        client.sendall(''.join(
            line + '\n' for line in lines + ('quit',)).encode('utf-8'))
        chunks = []
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    text = b''.join(chunks).decode('utf-8')
    if not text.endswith('Goodbye.\n'):
        raise AssertionError('the session did not end well: %r' % (text,))
    return text[:-len('Goodbye.\n')]


class InstallerTests(DispatcherTestCase):
    """MonitorInstaller serves this process's dispatcher, once."""

    def test_serves_the_registered_dispatcher_once(self):
        installer = monitorserver.MonitorInstaller(0)
        self.assertEqual(installer.__component_adapts__,
                         (interfaces.IDatabaseOpenedEvent,))
        running = self.start(uuid=self.uuid)
        event = interfaces.DatabaseOpened(self.db)
        self.assertIsNone(installer(event))  # as every installer
        port = installer.servers[running.dispatcher]
        installer(event)
        self.assertIs(installer.servers[running.dispatcher], port)  # once
        address = port.getHost()
        self.assertEqual(address.host, '127.0.0.1')
        self.assertEqual(session((address.host, address.port), 'async UUID'),
                         '%s\n' % (self.uuid,))
        running.call(port.stopListening)

    def test_without_a_dispatcher_it_warns(self):
        installer = monitorserver.MonitorInstaller('8081', 'localhost')
        self.assertEqual((installer.port, installer.host),
                         (8081, 'localhost'))
        self.assertIsNone(installer(interfaces.DatabaseOpened(self.db)))
        self.assertIn(
            'no dispatcher runs in this process, so the monitor is not '
            'started on localhost:8081 (register a dispatcher installer '
            'first)', self.messages('WARNING'))

    def test_bad_settings_fail_at_once(self):
        with self.assertRaises(ValueError):
            monitorserver.MonitorInstaller(-5)


def test_suite():
    suite = unittest.TestSuite()
    for case in (ProtocolTests, TCPTests, CheckAddressTests, InstallerTests):
        suite.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return suite
