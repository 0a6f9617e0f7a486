"""Functional tests of the Grok quickstart (examples/quickstart_grok).

``QuickstartLayer`` builds the application's WSGI stack in this process
the way its ``serve.py`` does (site.zcml with zc.async's basic dispatcher
policy, the database opened through ``zope.app.wsgi``, so the dispatcher
is started by the policy) and the tests drive it with WebTest.
``ServerTests`` runs the one documented command, ``serve.py``, as a real
waitress server and drives it over HTTP with zope.testbrowser.

Skipped when grok is not installed (``pip install 'zc.async[grok]'``) or
the examples directory is absent (an installed package).
"""
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import manuel.codeblock
import manuel.doctest
import manuel.testing
import zope.component.testing

import zc.asynchronous.ops.cli
import zc.asynchronous.dispatcher
import zc.asynchronous.instanceuuid as instanceuuid
import zc.asynchronous.testing
from zc.asynchronous.tests import test_docs
from zc.asynchronous.tests.test_subscribers import DEADLINE

try:
    import grok
except ImportError:  # the grok extra is not installed
    grok = None

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.normpath(os.path.join(
    HERE, '..', '..', '..', '..', 'examples', 'quickstart_grok'))
SRC = os.path.normpath(os.path.join(HERE, '..', '..', '..'))

available = unittest.skipUnless(
    grok is not None and os.path.isdir(EXAMPLE),
    "needs grok (pip install 'zc.async[grok]') and examples/quickstart_grok")


def wait_for_page(get, done, seconds=DEADLINE):
    """Get the page until ``done(page)``; return it (fail at the deadline).
    """
    deadline = time.monotonic() + seconds
    while True:
        page = get()
        if done(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError('page never got there:\n%s' % (page,))
        time.sleep(0.05)


class QuickstartLayer:
    """The quickstart's WSGI application, in this process."""

    __bases__ = ()
    __name__ = 'QuickstartLayer'
    __module__ = __name__

    @classmethod
    def setUp(cls):
        zope.component.testing.setUp()
        cls.tmpdir = tempfile.mkdtemp(prefix='zc.async-grok-')
        cls.saved = {
            'uuid': instanceuuid.__dict__.pop('UUID', None),
            'env': os.environ.get(instanceuuid.key),
            'root handlers': logging.root.handlers[:],
            'root level': logging.root.level,
            'path': sys.path[:],
        }
        instanceuuid.UUID = instanceuuid.getUUID(
            os.path.join(cls.tmpdir, 'uuid.txt'))
        sys.path.insert(0, EXAMPLE)
        import serve
        cls.app, cls.db = serve.make_app(cls.tmpdir, log_level='CRITICAL')
        cls.dispatcher = zc.asynchronous.dispatcher.get()
        # Its worker threads start at its first poll: before the tests.
        zc.asynchronous.testing.get_poll(cls.dispatcher, 0)

    @classmethod
    def tearDown(cls):
        zc.asynchronous.ops.cli.stop_dispatcher(cls.dispatcher)
        cls.db.close()
        zope.component.testing.tearDown()
        saved = cls.saved
        logging.root.handlers[:] = saved['root handlers']
        logging.root.setLevel(saved['root level'])
        sys.path[:] = saved['path']
        if saved['env'] is None:
            os.environ.pop(instanceuuid.key, None)
        else:
            os.environ[instanceuuid.key] = saved['env']
        instanceuuid.__dict__.pop('UUID', None)
        if saved['uuid'] is not None:
            instanceuuid.UUID = saved['uuid']
        shutil.rmtree(cls.tmpdir, True)


def text(page, id):
    """The text of the element ``id`` of a WebTest page, or None."""
    element = page.html.find(id=id)
    return None if element is None else element.text.strip()


@available
class QuickstartTests(unittest.TestCase):

    layer = QuickstartLayer

    def setUp(self):
        import webtest
        self.browser = webtest.TestApp(QuickstartLayer.app)

    def start(self, samples):
        """Submit the start form; return the job page it leads to."""
        form = self.browser.get('/pi').forms[0]
        form['samples'] = str(samples)
        started = form.submit('start')
        self.assertEqual(started.status_int, 302)
        return started.follow()

    def test_the_policy_started_the_dispatcher(self):
        dispatcher = QuickstartLayer.dispatcher
        self.assertTrue(dispatcher.activated)
        self.assertTrue(dispatcher.thread.is_alive())

    def test_start_a_job_see_progress_and_result(self):
        page = self.start(1000000)
        self.assertIn(text(page, 'state'), ('waiting', 'running'))
        self.assertIn('http-equiv="refresh"', page.text)
        url = page.request.url
        page = wait_for_page(lambda: self.browser.get(url),
                             lambda page: text(page, 'estimate'))
        self.assertEqual(text(page, 'state'), 'done')
        self.assertEqual(text(page, 'percent'), '100%')
        self.assertEqual(text(page, 'used'), '1000000')
        self.assertAlmostEqual(float(text(page, 'estimate')), 3.14159,
                               delta=0.02)
        self.assertNotIn('http-equiv="refresh"', page.text)
        # The start page lists it.
        jobs = self.browser.get('/pi').html.find(id='jobs')
        self.assertIn(text(page, 'estimate'), jobs.text)

    def test_progress_while_running_then_stop(self):
        page = self.start(10 ** 9)  # far too many to finish in a test
        url = page.request.url
        running = wait_for_page(
            lambda: self.browser.get(url),
            lambda page: int(text(page, 'done')) > 0)
        self.assertEqual(text(running, 'state'), 'running')
        self.assertLess(int(text(running, 'done')), 10 ** 9)
        stopping = running.forms[0].submit('stop').follow()
        self.assertIn('Stopping...', stopping.text)
        page = wait_for_page(lambda: self.browser.get(url),
                             lambda page: text(page, 'estimate'))
        used = int(text(page, 'used'))
        self.assertGreaterEqual(used, int(text(running, 'done')))
        self.assertLess(used, 10 ** 9)
        self.assertEqual(text(page, 'state'), 'done')

    def test_bad_input_and_unknown_jobs(self):
        form = self.browser.get('/pi').forms[0]
        form['samples'] = 'lots'
        self.assertEqual(form.submit('start').location,
                         'http://localhost/pi')
        self.browser.get('/pi/job?key=999999999', status=404)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@available
class ServerTests(unittest.TestCase):
    """``python examples/quickstart_grok/serve.py``: a real server."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-grok-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)

    def serve(self):
        port = free_port()
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [SRC] + [p for p in [env.get('PYTHONPATH')] if p])
        env.pop(instanceuuid.key, None)  # serve.py keeps it in --var
        process = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLE, 'serve.py'),
             '--port', str(port), '--var', self.tmpdir],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=self.tmpdir, env=env)
        self.addCleanup(process.stdout.close)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        url = 'http://127.0.0.1:%d/pi' % port
        output = []
        for line in process.stdout:
            output.append(line)
            if line.startswith('Serving %s' % url):
                return process, url, output
        self.fail('the server did not start:\n' + ''.join(output))

    def test_serve_start_a_job_and_stop_the_server(self):
        import zope.testbrowser.browser
        process, url, output = self.serve()
        browser = zope.testbrowser.browser.Browser()
        browser.open(url)
        self.assertIn('No jobs yet.', browser.contents)
        browser.getControl('Random points').value = '400000'
        browser.getControl('Start').click()
        self.assertIn('/pi/job?key=', browser.url)
        job_url = browser.url

        def reload():
            browser.open(job_url)
            return browser.contents
        page = wait_for_page(reload, lambda page: 'Estimate of pi' in page)
        self.assertIn('100%', page)
        self.assertIn('from <span id="used">400000</span> points', page)

        process.send_signal(signal.SIGINT)
        output.extend(process.stdout)
        self.assertEqual(process.wait(DEADLINE), 0, ''.join(output))
        log = ''.join(output)
        self.assertIn("agent 'main' added to queue ''", log)
        self.assertIn('deactivated dispatcher', log)


def chapter_setUp(test):
    test_docs.setUp(test)
    test.globs['here'] = EXAMPLE
    test.globs['_root_logging'] = (logging.root.handlers[:],
                                   logging.root.level)


def chapter_tearDown(test):
    handlers, level = test.globs['_root_logging']
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    test_docs.tearDown(test)


def chapter():
    """The quickstart's README, run as a doc chapter (docs/ includes it)."""
    m = manuel.doctest.Manuel(optionflags=test_docs.OPTIONFLAGS)
    m += manuel.codeblock.Manuel()
    return manuel.testing.TestSuite(
        m, os.path.join(EXAMPLE, 'README.rst'),
        setUp=chapter_setUp, tearDown=chapter_tearDown)


def test_suite():
    suite = unittest.defaultTestLoader.loadTestsFromName(__name__)
    if grok is not None and os.path.isdir(EXAMPLE):
        suite.addTest(chapter())
    return suite
