"""Tests of the dashboard and its API: zc.async.ops.web and
zc.async.ops.webapi.

A real dispatcher runs jobs on a FileStorage in a temporary directory,
with its reactor in a thread; the dashboard listens on that reactor on a
free loopback port.  The API is tested through a real HTTP client; the
page in Debian's headless Chromium, driven through the DevTools protocol
(skipped when ``/usr/bin/chromium`` is absent).  Set
``ZC_ASYNC_DASHBOARD_SCREENSHOTS`` to a directory to keep the screenshots
(the docs' images are made that way).
"""
import datetime
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import transaction
import twisted.internet.defer
import ZODB.utils

import zc.asynchronous
import zc.asynchronous.testing as testing
import zc.asynchronous.utils as utils
import zc.asynchronous.ops.web as web
import zc.asynchronous.ops.webapi as webapi
from zc.asynchronous.tests import browser
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.live import DispatcherTestCase, wait_until

TOKEN = 'a-secret-token'
SCREENSHOTS = 'ZC_ASYNC_DASHBOARD_SCREENSHOTS'


def add(a, b):
    return a + b


def boom():
    raise RuntimeError('kaboom')


def fresh_job():
    return 'fresh'


def loops():
    while True:
        time.sleep(0.005)


def with_progress():
    zc.asynchronous.local.getJob().annotations['progress'] = 0.5
    return 'done'


class DashboardTestCase(DispatcherTestCase):
    """A live dispatcher with a dashboard; ``request`` asks it over HTTP."""

    actions_token = None

    def setUp(self):
        super().setUp()
        self.ports = []
        self.running = self.start()
        self.port = self.start_dashboard(self.actions_token)

    def tearDown(self):
        for port in self.ports:  # while the reactor runs
            self.stop_listening(port)
        super().tearDown()

    def start_dashboard(self, token=None, host='127.0.0.1'):
        port = web.start_dashboard(
            self.db, self.running.reactor, 0, host,
            dispatcher=self.running.dispatcher, actions_token=token)
        self.ports.append(port)
        return port

    def stop_listening(self, port):
        closed = threading.Event()
        self.running.call(lambda: twisted.internet.defer.maybeDeferred(
            port.stopListening).addBoth(lambda ignored: closed.set()))
        self.assertTrue(closed.wait(10))

    @property
    def base(self):
        return 'http://127.0.0.1:%d' % (self.port.getHost().port,)

    def request(self, path, method='GET', headers=None, port=None):
        """``(status, content type, body text)`` of a request."""
        port = (port or self.port).getHost().port
        client = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        try:
            client.request(method, path, headers=headers or {})
            response = client.getresponse()
            body = response.read().decode('utf-8')
            return (response.status, response.getheader('Content-Type'),
                    body)
        finally:
            client.close()

    def get_json(self, path, status=200, **kw):
        code, content_type, body = self.request(path, **kw)
        self.assertEqual((code, content_type), (status, 'application/json'),
                         body)
        self.assertNotIn('Traceback (most recent', body if status != 200
                         else '')
        return json.loads(body)

    def error(self, path, status, **kw):
        """The error message of a JSON error answer."""
        answer = self.get_json(path, status, **kw)
        self.assertEqual(list(answer), ['error'])
        return answer['error']

    def finished(self, call, *args):
        """Put ``call(*args)``, wait for the dispatcher to finish it."""
        job = self.put(call, *args)
        testing.wait_for_result(job)
        return job

    def later(self, call):
        """A job put to begin in an hour: it stays pending."""
        return self.put(call, begin_after=utils.now() +
                        datetime.timedelta(hours=1))

    @staticmethod
    def oid(job):
        return ZODB.utils.u64(job._p_oid)


class APITests(DashboardTestCase):

    def test_listens_on_loopback_only_by_default(self):
        address = self.port.getHost()
        self.assertEqual(address.host, '127.0.0.1')
        self.assertIn('dashboard listening on http://127.0.0.1:%d/ '
                      '(actions disabled)' % (address.port,),
                      self.messages('INFO'))

    def test_overview(self):
        self.finished(add, 1, 2)
        self.finished(boom)
        self.later(add)
        answer = self.get_json('/api/overview')
        self.assertEqual(answer['database'], 'unnamed')
        self.assertIs(answer['actions'], False)
        self.assertEqual(answer['this dispatcher']['status'], 'RUNNING')
        self.assertEqual(answer['this dispatcher']['uuid'], str(self.uuid))
        queue = answer['queues']['']
        self.assertEqual(queue['counts'], {
            'pending': 1, 'assigned': 0, 'active': 0, 'callbacks': 0,
            'completed': 2, 'succeeded last hour': 1,
            'failed last hour': 1})
        self.assertEqual(queue['quotas'], {})
        mine = queue['dispatchers'][str(self.uuid)]
        self.assertIs(mine['dead'], False)
        self.assertIsNotNone(mine['activated'])
        self.assertIsNotNone(mine['uptime'])
        self.assertEqual(mine['agents'], {'main': {
            'filter': None, 'len': 0, 'size': 3}})

    def test_overview_shows_quotas_and_dead_dispatchers(self):
        self.queue.quotas.create('mail', 2)
        transaction.commit()
        other = self.start(uuid=uuid.uuid1())
        wait_until(lambda: str(other.dispatcher.UUID) in self.get_json(
            '/api/overview')['queues']['']['dispatchers'])
        other.stop()
        answer = self.get_json('/api/overview')['queues']['']
        self.assertEqual(answer['quotas'], {'mail': {'len': 0, 'size': 2}})
        stopped = answer['dispatchers'][str(other.dispatcher.UUID)]
        self.assertIsNone(stopped['activated'])
        self.assertIsNone(stopped['uptime'])

    def test_job_list_states_filters_and_paging(self):
        first = self.finished(add, 1, 2)
        failed = self.finished(boom)
        pending = self.later(fresh_job)
        ids = lambda answer: [row['id'][0] for row in answer['jobs']]
        everything = self.get_json('/api/jobs')
        # pending first, then completed jobs newest first (asyncdb order)
        self.assertEqual(ids(everything), [
            self.oid(pending), self.oid(failed), self.oid(first)])
        self.assertEqual((everything['offset'], everything['limit'],
                          everything['more']), (0, 50, False))
        row = everything['jobs'][1]
        self.assertEqual((row['callable'], row['status'], row['failed'],
                          row['queue'], row['agent']),
                         (__name__ + '.boom', 'completed', True, '',
                          'main'))
        self.assertEqual(ids(self.get_json('/api/jobs?state=failed')),
                         [self.oid(failed)])
        self.assertEqual(
            ids(self.get_json('/api/jobs?state=pending,succeeded')),
            [self.oid(pending), self.oid(first)])
        self.assertEqual(ids(self.get_json('/api/jobs?callable=ad*')),
                         [self.oid(first)])
        self.assertEqual(ids(self.get_json('/api/jobs?queue=other')), [])
        self.assertEqual(ids(self.get_json(
            '/api/jobs?state=completed&start=since1H&queue=')),
            [self.oid(failed), self.oid(first)])
        page = self.get_json('/api/jobs?offset=1&limit=1')
        self.assertEqual((ids(page), page['more']), ([self.oid(failed)],
                                                      True))
        page = self.get_json('/api/jobs?offset=2&limit=1')
        self.assertEqual((ids(page), page['more']), ([self.oid(first)],
                                                      False))

    def test_job_detail_of_a_failed_job(self):
        job = self.finished(boom)
        answer = self.get_json('/api/jobs/%d?database=unnamed'
                               % (self.oid(job),))
        self.assertEqual(answer['id'], [self.oid(job), 'unnamed'])
        self.assertEqual((answer['status'], answer['failed'],
                          answer['callable']),
                         ('completed', True, __name__ + '.boom'))
        self.assertIn('RuntimeError: kaboom', answer['traceback'])
        self.assertIn('in boom', answer['traceback'])
        self.assertTrue(answer['result'].startswith(
            "Traceback: <class 'RuntimeError'>: kaboom"))
        self.assertEqual(answer['retry']['data'], {})
        self.assertIn('RetryCommonFourTimes', answer['retry']['policy'])
        self.assertIsNone(answer['retry']['policy factory'])
        for key in ('begin after', 'active start', 'active end', 'wait',
                    'active', 'agent', 'dispatcher', 'args', 'kwargs'):
            self.assertIn(key, answer)

    def test_job_detail_has_annotations(self):
        job = self.finished(with_progress)
        answer = self.get_json('/api/jobs/%d' % (self.oid(job),))
        self.assertEqual(answer['annotations'], {'progress': '0.5'})
        self.assertIsNone(answer['traceback'])
        self.assertEqual(answer['result'], "'done'")

    def test_bad_requests_get_clear_errors(self):
        job = self.finished(add, 1, 2)
        self.assertEqual(self.error('/api/jobs/999999', 404),
                         "no job with oid 999999 in database 'unnamed'")
        self.assertEqual(self.error('/api/jobs/12x', 400),
                         "oid must be an integer, not '12x'")
        self.assertEqual(self.error('/api/jobs/0', 404),
                         'oid 0 is not a job')
        self.assertEqual(self.error('/api/jobs/%d?database=other'
                                    % (self.oid(job),), 404),
                         "unknown database 'other'")
        self.assertEqual(self.error('/api/jobs?state=sleeping', 400),
                         'Available states are pending, assigned, active, '
                         'callbacks, completed, succeeded, failed (unknown: '
                         'sleeping)')
        self.assertIn('can only include zero or one of', self.error(
            '/api/jobs?state=failed,succeeded', 400))
        self.assertIn('bad value for filter "start"', self.error(
            '/api/jobs?start=yesterday', 400))
        self.assertTrue(self.error('/api/jobs?color=red', 400).startswith(
            "unknown parameter 'color' (parameters: state, offset, limit, "
            "callable, queue,"))
        self.assertEqual(self.error('/api/jobs?limit=x', 400),
                         "limit must be an integer, not 'x'")
        self.assertEqual(self.error('/api/jobs?limit=501', 400),
                         'limit must be at most 500, not 501')
        self.assertEqual(self.error('/api/jobs?offset=-1', 400),
                         'offset must be at least 0, not -1')
        self.assertEqual(self.error('/api/jobs?queue=a&queue=b', 400),
                         "parameter 'queue' given twice")
        self.assertEqual(self.error('/api/jobs?queue', 400),
                         "malformed query string: bad query field: 'queue'")
        self.assertTrue(self.error('/api/jobs?queue=%ff', 400).startswith(
            "malformed query string: 'utf-8' codec can't decode"))
        self.assertEqual(self.error('/api/overview?x=1', 400),
                         "unknown parameter 'x' (this request takes none)")
        self.assertEqual(self.error('/api/queues', 404),
                         'no API at /api/queues')
        self.assertEqual(self.error('/api/jobs', 405, method='POST'),
                         'use GET here, not POST')

    def test_pages_and_page_errors(self):
        status, content_type, body = self.request('/')
        self.assertEqual((status, content_type),
                         (200, 'text/html; charset=utf-8'))
        self.assertIn('<script src="/dashboard.js"', body)
        self.assertEqual(self.request('/jobs/5')[:2],
                         (200, 'text/html; charset=utf-8'))
        self.assertEqual(self.request('/dashboard.js')[:2],
                         (200, 'text/javascript; charset=utf-8'))
        self.assertEqual(self.request('/nope/x'), (
            404, 'text/plain; charset=utf-8', '404 no page at /nope/x\n'))
        self.assertEqual(self.request('/', method='DELETE'), (
            405, 'text/plain; charset=utf-8', '405 pages only answer GET\n'))

    def test_other_host_names_are_refused(self):
        # A page on another site that rebinds its name to 127.0.0.1 must
        # not read the API.
        self.assertEqual(
            self.error('/api/overview', 403,
                       headers={'Host': 'evil.example:80'}),
            "this dashboard only answers requests for a loopback address, "
            "not 'evil.example'")
        self.get_json('/api/overview', headers={'Host': 'localhost:1'})

    def test_unexpected_errors_are_logged_not_shown(self):
        def broken(conn, *args):
            raise RuntimeError('the\nend')
        original = webapi.overview
        webapi.overview = broken
        self.addCleanup(setattr, webapi, 'overview', original)
        self.assertEqual(self.error('/api/overview', 500),
                         'RuntimeError: the end')
        self.assertIn('dashboard request GET /api/overview failed',
                      self.messages('ERROR'))

    def test_actions_are_refused_when_disabled(self):
        pending = self.later(add)
        for action in ('retry', 'cancel', 'abort'):
            self.assertEqual(
                self.error('/api/jobs/%d/%s' % (self.oid(pending), action),
                           403, method='POST',
                           headers={'Authorization': 'Bearer ' + TOKEN}),
                'actions are disabled: start the dashboard with an '
                'actions token to enable them')
        transaction.begin()
        self.assertEqual(pending.status, zc.asynchronous.interfaces.PENDING)

    def test_a_short_token_is_refused(self):
        with self.assertRaises(ValueError) as e:
            web.start_dashboard(self.db, self.running.reactor, 0,
                                dispatcher=self.running.dispatcher,
                                actions_token='short')
        self.assertEqual(str(e.exception), 'the actions token must have at '
                         'least 8 characters')


class ActionTests(DashboardTestCase):

    actions_token = TOKEN

    def post(self, job, action, token=TOKEN, status=200, scheme='Bearer'):
        headers = {} if token is None else {
            'Authorization': '%s %s' % (scheme, token)}
        return self.get_json('/api/jobs/%d/%s' % (self.oid(job), action),
                             status, method='POST', headers=headers)

    def test_the_token_is_required(self):
        pending = self.later(add)
        for token, scheme in ((None, ''), ('wrong-token', 'Bearer'),
                              (TOKEN, 'Basic')):
            answer = self.post(pending, 'cancel', token, 401, scheme)
            self.assertEqual(answer, {'error': (
                'actions need the header "Authorization: Bearer <token>" '
                'with the actions token')})
        self.assertEqual(self.error('/api/jobs/%d/cancel'
                                    % (self.oid(pending),), 405),
                         'use POST here, not GET')
        transaction.begin()
        self.assertEqual(pending.status, zc.asynchronous.interfaces.PENDING)

    def test_cancel_removes_a_pending_job(self):
        pending = self.later(add)
        self.assertEqual(self.post(pending, 'cancel'),
                         {'cancelled': [self.oid(pending), 'unnamed']})
        transaction.begin()
        self.assertEqual(pending.status, zc.asynchronous.interfaces.NEW)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(self.post(pending, 'cancel', status=409), {
            'error': 'only pending jobs can be cancelled; job %d is new'
            % (self.oid(pending),)})

    def test_abort_stops_a_running_job_and_fails_a_pending_one(self):
        pending = self.later(add)
        self.assertEqual(self.post(pending, 'abort'),
                         {'abort requested': [self.oid(pending), 'unnamed']})
        transaction.begin()
        self.assertEqual(str(pending.result.value),
                         'its abort was requested before it started')
        running = self.put(loops)
        testing.wait_for_start(running)
        self.assertEqual(self.post(running, 'abort'),
                         {'abort requested': [self.oid(running), 'unnamed']})
        self.assertEqual(str(testing.wait_for_result(running).value),
                         'its abort was requested')
        self.assertEqual(self.post(running, 'abort', status=409), {
            'error': 'only pending or running jobs can be aborted; job %d '
                     'is completed' % (self.oid(running),)})

    def test_retry_puts_a_copy_of_a_failed_job(self):
        failed = self.finished(boom)
        answer = self.post(failed, 'retry')
        self.assertEqual(answer['retried'], [self.oid(failed), 'unnamed'])
        transaction.begin()
        copy = self.conn.get(ZODB.utils.p64(answer['new job'][0]))
        self.assertIsNot(copy, failed)
        testing.wait_for_result(copy)
        self.assertIn('kaboom', str(copy.result))
        done = self.finished(add, 1, 2)
        self.assertEqual(self.post(done, 'retry', status=409), {
            'error': 'only failed jobs can be retried; job %d is completed'
            % (self.oid(done),)})


class WorkerTests(unittest.TestCase):
    """``zc-async worker --dashboard-port``, as a real process."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-web-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.uri = 'file://' + os.path.join(self.directory, 'Data.fs')

    def test_the_worker_serves_the_dashboard(self):
        w = processes.WorkerProcess(
            self.uri, self.directory, 'w', '--install', '--dashboard-port',
            '0').start()
        self.addCleanup(w.kill)
        port = int(processes.wait_for(lambda: re.search(
            r'dashboard listening on http://127\.0\.0\.1:(\d+)/ \(actions '
            r'disabled\)', w.log), message='dashboard in ' + w.log_path
        ).group(1))
        client = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        client.request('GET', '/api/overview')
        answer = json.loads(client.getresponse().read())
        client.close()
        self.assertEqual(answer['this dispatcher']['uuid'], str(w.uuid))
        self.assertIn('', answer['queues'])
        self.assertEqual(w.stop(), 0, w.log)

    def test_a_bad_token_is_a_clear_start_up_error(self):
        done = subprocess.run(
            [sys.executable, '-m', 'zc.async.worker', self.uri, '--install',
             '--uuid-file', os.path.join(self.directory, 'uuid.txt'),
             '--log-file', os.path.join(self.directory, 'log'),
             '--dashboard-port', '0', '--actions-token', 'short'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=120,
            env=processes.subprocess_env())
        self.assertEqual((done.returncode, done.stderr.decode()), (
            2, 'zc-async worker: error: cannot start the dashboard on '
            '127.0.0.1:0: the actions token must have at least 8 '
            'characters\n'))


class ChromiumLayer:
    """One headless Chromium for all the browser tests, and a directory
    for their screenshots."""

    browser = screenshots = None

    @classmethod
    def setUp(cls):
        if browser.unavailable():
            return  # the tests skip themselves
        cls.browser = browser.Browser()
        cls.screenshots = os.environ.get(SCREENSHOTS) or tempfile.mkdtemp(
            prefix='zc.async-screenshots-')

    @classmethod
    def tearDown(cls):
        if cls.browser is not None:
            cls.browser.close()
        if cls.screenshots is not None and not os.environ.get(SCREENSHOTS):
            shutil.rmtree(cls.screenshots, ignore_errors=True)
        cls.browser = cls.screenshots = None


@unittest.skipIf(browser.unavailable(), browser.unavailable())
class BrowserTests(DashboardTestCase):
    """The page in headless Chromium."""

    layer = ChromiumLayer

    def setUp(self):
        super().setUp()
        if ChromiumLayer.browser is None:  # run without zope.testrunner
            ChromiumLayer.setUp()
            self.addCleanup(ChromiumLayer.tearDown)
        self.browser = ChromiumLayer.browser
        self.screenshots = ChromiumLayer.screenshots

    def open(self, path):
        """Load ``path`` and wait for its first refresh."""
        self.browser.open(self.base + path)
        self.browser.wait_for('document.body.dataset.refreshes >= 1')

    def text(self, selector):
        return self.browser.evaluate(
            'document.querySelector(%s).innerText' % (json.dumps(selector),))

    def rows(self):
        return self.browser.evaluate(
            'Array.from(document.querySelectorAll("#jobs tbody tr"))'
            '.map(tr => tr.cells[1].innerText)')

    def screenshot(self, name):
        path = os.path.join(self.screenshots, name)
        self.browser.screenshot(path)
        with open(path, 'rb') as f:
            self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')

    def test_overview_shows_live_data(self):
        for number in range(3):
            self.finished(add, number, 1)
        self.finished(boom)
        self.later(with_progress)
        self.open('/')
        self.assertEqual(self.browser.errors(), [])
        self.assertIn(str(self.uuid), self.text('#dispatchers'))
        self.assertIn('alive', self.text('#dispatchers'))
        self.assertIn('RUNNING', self.text('#this-dispatcher'))
        self.assertEqual(self.rows()[0], __name__ + '.with_progress')
        self.screenshot('dashboard-overview.png')
        # a job put after the page loaded appears at a refresh
        self.finished(fresh_job)
        self.browser.wait_for(
            'document.querySelector("#jobs").innerText.includes("fresh_job")')
        self.assertEqual(self.browser.errors(), [])

    def test_failed_job_page_shows_the_traceback(self):
        job = self.finished(boom)
        self.open('/')
        self.browser.evaluate('document.querySelector("#jobs tbody a")'
                              '.click()')
        self.browser.wait_for('location.pathname == "/jobs/%d"'
                              % (self.oid(job),))
        self.browser.wait_for('document.body.dataset.refreshes >= 1')
        self.browser.wait_for(
            '!document.querySelector("#traceback-section").hidden')
        traceback = self.text('#traceback')
        self.assertIn('Traceback (most recent call last)', traceback)
        self.assertIn('RuntimeError: kaboom', traceback)
        self.assertIn(__name__ + '.boom', self.text('#job-title'))
        self.assertTrue(self.browser.evaluate(
            'document.querySelector("#actions").hidden'))  # read-only
        self.assertEqual(self.browser.errors(), [])
        self.screenshot('dashboard-failed-job.png')

    def test_filters_narrow_the_list(self):
        self.finished(add, 1, 2)
        self.finished(boom)
        self.open('/?state=failed')
        self.assertEqual(self.rows(), [__name__ + '.boom'])
        self.browser.evaluate(
            'document.querySelector("select[name=state]").value = "";'
            'document.querySelector("input[name=callable]").value = "add";'
            'document.querySelector("#apply").click()')
        self.browser.wait_for('location.search == "?callable=add"')
        self.browser.wait_for(
            '!document.querySelector("#jobs").innerText.includes("boom")')
        self.assertEqual(self.rows(), [__name__ + '.add'])
        self.assertEqual(self.browser.errors(), [])

    def test_an_unknown_job_shows_the_error(self):
        self.browser.open(self.base + '/jobs/999999')
        self.browser.wait_for(
            '!document.querySelector("#error").hidden')
        self.assertEqual(self.text('#error'),
                         "no job with oid 999999 in database 'unnamed'")

    def test_a_running_job_can_be_aborted(self):
        job = self.put(loops)
        testing.wait_for_start(job)
        self.port = self.start_dashboard(TOKEN)
        self.open('/jobs/%d' % (self.oid(job),))
        self.browser.wait_for('!document.querySelector("#actions").hidden')
        self.assertFalse(self.browser.evaluate(
            'document.querySelector("#abort-button").hidden'))
        self.browser.evaluate(
            'document.querySelector("#token").value = %s;'
            'document.querySelector("#abort-button").click()'
            % (json.dumps(TOKEN),))
        self.browser.wait_for('document.querySelector("#action-result")'
                              '.innerText.includes("abort requested")')
        self.assertEqual(str(testing.wait_for_result(job).value),
                         'its abort was requested')

    def test_actions_need_the_token(self):
        job = self.finished(boom)
        self.port = self.start_dashboard(TOKEN)
        self.open('/jobs/%d' % (self.oid(job),))
        self.browser.wait_for('!document.querySelector("#actions").hidden')
        self.assertTrue(self.browser.evaluate(
            'document.querySelector("#cancel-button").hidden'))
        self.assertTrue(self.browser.evaluate(
            'document.querySelector("#abort-button").hidden'))
        click = ('document.querySelector("#token").value = %s;'
                 'document.querySelector("#retry-button").click()')
        self.browser.evaluate(click % (json.dumps('wrong-token'),))
        self.browser.wait_for('document.querySelector("#action-result")'
                              '.innerText.startsWith("refused: actions '
                              'need the header")')
        self.assertEqual(len(self.queue), 0)
        self.browser.evaluate(click % (json.dumps(TOKEN),))
        self.browser.wait_for('document.querySelector("#action-result")'
                              '.innerText.includes("retried")')
        # the copy runs and fails too
        wait_until(lambda: len(self.get_json(
            '/api/jobs?state=failed')['jobs']) == 2)

    def test_job_page_shows_unique_key_and_attempt(self):
        from zc.asynchronous.retry import retrying
        job = self.put(fresh_job, unique_key='invoice-42',
                       retry_policy_factory=retrying(attempts=5),
                       begin_after=utils.now() + datetime.timedelta(hours=1))
        plain = self.later(fresh_job)
        self.open('/jobs/%d' % (self.oid(job),))
        fields = self.text('#job-fields')
        self.assertIn('unique key\ninvoice-42', fields)
        self.assertIn('attempt\n1 of 5', fields)
        self.open('/jobs/%d' % (self.oid(plain),))
        fields = self.text('#job-fields')
        self.assertNotIn('unique key', fields)
        self.assertNotIn('attempt', fields)
        self.assertEqual(self.browser.errors(), [])


def test_suite():
    suite = unittest.TestSuite()
    for case in (APITests, ActionTests, WorkerTests, BrowserTests):
        suite.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return suite
