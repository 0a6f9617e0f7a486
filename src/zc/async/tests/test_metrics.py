"""Prometheus metrics (zc.async.ops.metrics): ``/metrics`` scraped over HTTP
while a real dispatcher runs real jobs on a FileStorage.

Skipped when prometheus_client (the ``metrics`` extra) is missing, except
for the test of the error that its absence gives.
"""
import os
import shutil
import tempfile
import threading
import unittest
import urllib.request
import uuid

import ZODB

import zc.asynchronous.dispatcher
import zc.asynchronous.ops.metrics as metrics
import zc.asynchronous.testing
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.live import DispatcherTestCase, wait_until
from zc.asynchronous.tests.test_worker import put_jobs

needs_prometheus = unittest.skipIf(
    metrics.prometheus_client is None, 'prometheus_client is not installed')

_gate = threading.Event()  # blocked jobs wait for it


def succeed(value):
    return value * 2


def explode():
    raise ValueError('boom')


def blocked():
    assert _gate.wait(30), 'the test never opened the gate'
    return 'released'


def scrape(port):
    """The samples served at ``/metrics``: {(name, sorted labels): value}.
    """
    from prometheus_client.parser import text_string_to_metric_families
    url = 'http://127.0.0.1:%d/metrics' % port
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples}


def value(samples, name, **labels):
    """One sample's value (0 when absent, as for a counter not moved)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@needs_prometheus
class MetricsTests(DispatcherTestCase):
    """One dispatcher, its metrics in a private registry served on a free
    port."""

    def setUp(self):
        super().setUp()
        _gate.clear()
        self.addCleanup(_gate.set)  # never leave a worker blocked
        self.registry = metrics.prometheus_client.CollectorRegistry()
        self.server = metrics.start_metrics_server(0, registry=self.registry)
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.port = self.server.server_port

    def scrape(self):
        return scrape(self.port)

    def count(self, name, agent='main'):
        return value(self.scrape(), 'zc_async_jobs_%s_total' % name,
                     queue='', agent=agent)

    def jobs(self, status):
        return value(self.scrape(), 'zc_async_jobs', database='unnamed',
                     queue='', status=status)

    def test_serves_on_loopback_by_default(self):
        self.assertEqual(self.server.server_address[0], '127.0.0.1')

    def test_counters_move_as_jobs_run(self):
        live = self.start(poll_interval=0.2)
        installed = metrics.install_metrics(live.dispatcher, self.registry)
        self.addCleanup(installed.uninstall)
        self.assertEqual(self.count('started'), 0)
        for n in range(3):
            self.put(succeed, n)
        self.put(explode)
        wait_until(lambda: self.count('succeeded') == 3
                   and self.count('failed') == 1,
                   message='3 succeeded and 1 failed in %r' % self.scrape())
        samples = self.scrape()
        self.assertEqual(value(samples, 'zc_async_jobs_started_total',
                               queue='', agent='main'), 4)
        self.assertEqual(value(samples, 'zc_async_job_duration_seconds_count',
                               queue='', agent='main'), 4)
        self.assertGreater(
            value(samples, 'zc_async_poll_duration_seconds_count'), 0)
        # The gauges read the database: all done, none waiting.
        wait_until(lambda: self.jobs('completed') == 4)
        self.assertEqual(self.jobs('pending'), 0)
        this = str(self.uuid)
        self.assertEqual(value(samples, 'zc_async_dispatcher_up',
                               database='unnamed', uuid=this), 1)
        age = samples[('zc_async_dispatcher_last_ping_age_seconds',
                       (('database', 'unnamed'), ('uuid', this)))]
        self.assertGreaterEqual(age, 0)
        self.assertLess(age, 60)

    def test_gauges_show_pending_and_active_jobs(self):
        live = self.start(poll_interval=0.2)
        installed = metrics.install_metrics(live.dispatcher, self.registry)
        self.addCleanup(installed.uninstall)
        self.put(blocked)
        # The claim's commit makes the job ACTIVE in the database before
        # its worker reports the start: wait for both.
        wait_until(lambda: self.jobs('active') == 1,
                   message='an active job in %r' % self.scrape())
        wait_until(lambda: self.count('started') == 1,
                   message='a started job in %r' % self.scrape())
        self.assertEqual(self.count('succeeded'), 0)
        _gate.set()
        wait_until(lambda: self.jobs('completed') == 1)
        self.assertEqual(self.jobs('active'), 0)
        wait_until(lambda: self.count('succeeded') == 1)

    def test_a_dispatcher_that_is_not_activated_is_down(self):
        dispatcher = zc.asynchronous.dispatcher.Dispatcher(self.db)
        metrics.install_metrics(dispatcher, self.registry)
        self.put(succeed, 1)
        self.put(succeed, 2)
        samples = self.scrape()
        self.assertEqual(value(samples, 'zc_async_dispatcher_up',
                               database='unnamed', uuid=str(self.uuid)), 0)
        self.assertEqual(self.jobs('pending'), 2)
        self.assertEqual(self.jobs('completed'), 0)

    def test_uninstall_stops_counting(self):
        live = self.start(poll_interval=0.2)
        installed = metrics.install_metrics(live.dispatcher, self.registry)
        job = self.put(succeed, 1)
        wait_until(lambda: self.count('succeeded') == 1)
        live.call(installed.uninstall)
        self.assertNotIn(installed, live.dispatcher.listeners)
        job = self.put(succeed, 2)
        zc.asynchronous.testing.wait_for_result(job)
        self.assertEqual(self.count('started'), 1)  # kept, not moved
        # Nothing reads the database for this registry any more.
        self.assertNotIn(('zc_async_jobs', (
            ('database', 'unnamed'), ('queue', ''), ('status', 'pending'))),
            self.scrape())

    def test_a_failing_listener_is_logged_and_polls_go_on(self):
        live = self.start(poll_interval=0.2)

        def broken(event, info):
            raise RuntimeError('broken listener')
        live.call(live.dispatcher.listeners.append, broken)
        installed = metrics.install_metrics(live.dispatcher, self.registry)
        self.addCleanup(installed.uninstall)
        job = self.put(succeed, 21)
        self.assertEqual(zc.asynchronous.testing.wait_for_result(job), 42)
        wait_until(lambda: self.count('succeeded') == 1)
        self.assertTrue(any(
            message.startswith('error in dispatcher listener')
            for message in self.messages('ERROR')))

    def test_installs_share_a_registry(self):
        first = zc.asynchronous.dispatcher.Dispatcher(self.db)
        other = zc.asynchronous.dispatcher.Dispatcher(
            self.db, uuid=uuid.uuid1())
        metrics.install_metrics(first, self.registry)
        metrics.install_metrics(other, self.registry)  # no duplicate error
        samples = self.scrape()
        # One database, read once; both local dispatchers are down.
        self.assertEqual(len([key for key in samples
                              if key[0] == 'zc_async_dispatcher_up']), 2)


class MissingPrometheusTests(unittest.TestCase):

    def test_clear_error(self):
        saved = metrics.prometheus_client
        metrics.prometheus_client = None
        try:
            with self.assertRaises(metrics.MetricsUnavailable) as caught:
                metrics.start_metrics_server(0)
        finally:
            metrics.prometheus_client = saved
        self.assertIn("pip install 'zc.async[metrics]'", str(caught.exception))


@needs_prometheus
class WorkerMetricsTests(unittest.TestCase):
    """``zc-async worker --metrics-port`` serves the worker's metrics."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-metrics-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, 'Data.fs')

    def test_worker_serves_metrics(self):
        db = ZODB.DB(self.path)
        put_jobs(db, 3)
        db.close()
        port = processes.free_port()
        w = processes.WorkerProcess(
            'file://' + self.path, self.directory, 'w', '--poll-interval',
            '0.2', '--metrics-port', str(port)).start()
        self.addCleanup(w.kill)

        def succeeded():
            try:
                samples = scrape(port)
            except OSError:  # not listening yet
                return False
            return value(samples, 'zc_async_jobs_succeeded_total',
                         queue='', agent='main') == 3
        processes.wait_for(succeeded, message='3 jobs counted; log:\n%s'
                           % w.log)
        samples = scrape(port)
        self.assertEqual(value(samples, 'zc_async_dispatcher_up',
                               database='unnamed', uuid=str(w.uuid)), 1)
        self.assertEqual(w.stop(), 0, w.log)

    def test_port_in_use(self):
        import socket
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen()
            port = busy.getsockname()[1]
            w = processes.WorkerProcess(
                'file://' + self.path, self.directory, 'w', '--install',
                '--metrics-port', str(port)).start()
            self.addCleanup(w.kill)
            self.assertEqual(w.wait(), 2)
        last = w.log.strip().splitlines()[-1]
        self.assertTrue(last.startswith(
            'zc-async worker: error: cannot serve metrics on port %d'
            % port), last)

