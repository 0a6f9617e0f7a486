"""A headless Chromium driven through the DevTools protocol (not a test).

:class:`Browser` starts Debian's ``/usr/bin/chromium`` with a throwaway
profile, connects to its page over the DevTools websocket (with the
``websocket-client`` package) and records the page's console errors,
uncaught exceptions and browser log errors (failed loads, blocked
content).  Waits poll a condition with a deadline; nothing sleeps for
timing.
"""
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request

from zc.asynchronous.tests import processes

CHROMIUM = '/usr/bin/chromium'

FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--disable-extensions', '--window-size=1280,900',
         '--remote-debugging-address=127.0.0.1',
         '--remote-debugging-port=0')


def unavailable():
    """Why the browser tests cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return ('%s is absent (apt-get install chromium; .ci/run installs '
                'it)' % (CHROMIUM,))
    try:
        import websocket  # noqa: F401 (websocket-client)
    except ImportError:
        return 'the websocket-client package is absent (zc.async[test])'
    return None


def wait_for(condition, seconds=20, message='condition never became true'):
    """Call ``condition`` until it returns a true value, and return it."""
    res = processes.poll(condition, seconds, 0.05)
    if not res:
        raise AssertionError(message)
    return res


class BrowserError(Exception):
    """The browser answered a DevTools command with an error."""


class Browser:
    """One headless Chromium with one page; call :meth:`close` at the end.
    """

    def __init__(self):
        import websocket
        self.profile = tempfile.mkdtemp(prefix='zc.async-chromium-')
        self.log = open(os.path.join(self.profile, 'stderr.txt'), 'wb')
        self.process = subprocess.Popen(
            (CHROMIUM,) + FLAGS + ('--user-data-dir=' + self.profile,
                                   'about:blank'),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        try:
            port = wait_for(self._port, 30, 'chromium did not start')
            url = wait_for(lambda: self._page_url(port), 30,
                           'chromium opened no page')
            self.socket = websocket.create_connection(url, timeout=30)
        except BaseException:
            self._stop_process()
            raise
        self._ids = itertools.count(1)
        self.events = []
        for domain in ('Page', 'Runtime', 'Log'):
            self.send(domain + '.enable')

    def _port(self):
        path = os.path.join(self.profile, 'DevToolsActivePort')
        if self.process.poll() is not None:
            raise AssertionError('chromium exited with %s'
                                 % (self.process.returncode,))
        try:
            with open(path) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _page_url(port):
        with urllib.request.urlopen(
                'http://127.0.0.1:%d/json/list' % (port,), timeout=10) as f:
            targets = json.load(f)
        for target in targets:
            if target['type'] == 'page':
                return target['webSocketDebuggerUrl']
        return None

    # ------------------------------------------------------- protocol

    def send(self, method, **params):
        """Run a DevTools command; its result (events are kept)."""
        number = next(self._ids)
        self.socket.send(json.dumps(
            {'id': number, 'method': method, 'params': params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get('id') == number:
                if 'error' in message:
                    raise BrowserError('%s: %s' % (method, message['error']))
                return message['result']
            self.events.append(message)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (promises are
        awaited)."""
        res = self.send('Runtime.evaluate', expression=expression,
                        returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in res:
            raise BrowserError('%s: %s' % (
                expression, res['exceptionDetails'].get('exception', {})
                .get('description', res['exceptionDetails'])))
        return res['result'].get('value')

    def open(self, url):
        """Load ``url`` and wait until the page has loaded."""
        self.events.clear()
        self.send('Page.navigate', url=url)
        wait_for(lambda: self.evaluate(
            'document.readyState === "complete"'), message='page load')

    def wait_for(self, expression, seconds=20):
        """Wait until a JavaScript expression is true; its value."""
        return wait_for(lambda: self.evaluate(expression), seconds,
                        'never true in the page: %s' % (expression,))

    def errors(self):
        """The page's console errors, exceptions and log errors so far."""
        self.evaluate('0')  # take in the events sent meanwhile
        res = []
        for event in self.events:
            method, params = event.get('method'), event.get('params', {})
            if method == 'Runtime.exceptionThrown':
                res.append(params['exceptionDetails'].get('text'))
            elif (method == 'Runtime.consoleAPICalled'
                  and params['type'] in ('error', 'assert')):
                res.append(' '.join(str(arg.get('value', arg))
                                    for arg in params['args']))
            elif (method == 'Log.entryAdded'
                  and params['entry']['level'] == 'error'):
                res.append(params['entry']['text'])
        return res

    def screenshot(self, path):
        """Save a PNG of the page at ``path``."""
        data = self.send('Page.captureScreenshot', format='png',
                         captureBeyondViewport=True)['data']
        with open(path, 'wb') as f:
            f.write(base64.b64decode(data))

    # ------------------------------------------------------- the end

    def close(self):
        try:
            self.socket.close()
        finally:
            self._stop_process()

    def _stop_process(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
