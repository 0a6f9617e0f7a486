"""A web dashboard and JSON API, served by twisted.web.

:func:`start_dashboard` listens on a reactor (a dispatcher's, or the
``zc-async worker``'s with ``--dashboard-port``) on 127.0.0.1 unless told
otherwise.  It serves:

- ``/`` and ``/jobs/<oid>``: one static page (``dashboard.html``, with
  ``dashboard.js`` and ``dashboard.css``; no build step, nothing from
  other sites) that reads the JSON API and refreshes itself every few
  seconds;
- ``GET /api/overview``: queues, job counts, quotas, dispatchers, agents
  (see :func:`zc.async.ops.webapi.overview`);
- ``GET /api/jobs?state=...&queue=...&callable=...&offset=&limit=``: a
  page of jobs (see :func:`zc.async.ops.webapi.jobs`; every ``asyncdb``
  filter works);
- ``GET /api/jobs/<oid>[?database=NAME]``: one job, with its traceback
  (see :func:`zc.async.ops.webapi.job_detail`);
- ``POST /api/jobs/<oid>/retry``, ``/cancel`` and ``/abort`` (see
  :func:`zc.async.ops.webapi.retry`, :func:`~zc.async.ops.webapi.cancel` and
  :func:`~zc.async.ops.webapi.abort`):
  refused with 403 unless the dashboard was started with an
  ``actions_token``, and then with 401 unless the request has the header
  ``Authorization: Bearer <token>``;
- ``POST /api/jobs/<oid>/replay`` (a failed job) and ``/dry-run`` (a
  pending job): the report of running the job in a sandbox that writes
  nothing (see :mod:`zc.async.ops.sandbox`); refused with 403 unless the
  dashboard was started with ``allow_replay``, as they run job code in the
  dashboard's process.  They need no token.

Each API request reads the database in a reactor pool thread, through a
connection of its own that is aborted (actions: committed) and closed
before the answer is sent.  Errors are JSON ``{"error": "..."}`` (API) or
plain text (pages), with status 400, 401, 403, 404, 405 or 409; an
unexpected error is logged and answered with 500 and a one-line message,
never a traceback.
"""
import hmac
import ipaddress
import json
import os
import threading
import urllib.parse

import transaction
import twisted.internet.threads
import twisted.python.threadable
import twisted.web.resource
import twisted.web.server
import ZODB.POSException

from .. import logs
from .. import monitor
from .. import tolerant
from . import webapi

_HERE = os.path.dirname(os.path.abspath(__file__))

#: File name -> content type of the page's files.
STATIC = {'dashboard.html': 'text/html; charset=utf-8',
          'dashboard.js': 'text/javascript; charset=utf-8',
          'dashboard.css': 'text/css; charset=utf-8'}

_SECURITY_HEADERS = {
    b'Content-Security-Policy': (
        b"default-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    b'X-Content-Type-Options': b'nosniff',
    b'Referrer-Policy': b'no-referrer',
    b'Cache-Control': b'no-store',
}

_LOOPBACK_NAMES = frozenset(['localhost', '127.0.0.1', '::1'])

#: How many times an action is tried when its commit conflicts.
CONFLICT_ATTEMPTS = 5

#: Action name -> the webapi function that does it.
ACTIONS = {'retry': webapi.retry, 'cancel': webapi.cancel,
           'abort': webapi.abort}

#: Sandbox run name -> the webapi function that does it.
SANDBOX_RUNS = {'replay': webapi.replay, 'dry-run': webapi.dry_run}


def _read_static(name):
    with open(os.path.join(_HERE, name), 'rb') as f:
        return f.read()


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == 'localhost'


class HTTPError(Exception):
    """Answer the request with ``status`` and ``message``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Dashboard(twisted.web.resource.Resource):
    """The whole site: routes each request by its path.

    ``db`` is the database to show; ``dispatcher`` (optional) the
    dashboard's own dispatcher, whose status the overview adds and whose
    UUID ``uuid=THIS`` means; ``actions_token`` enables the actions.
    ``loopback_only``: only accept requests whose ``Host`` is a loopback
    name (the server listens on a loopback address), so that a web page
    elsewhere cannot reach the API through DNS rebinding.
    ``allow_replay`` enables replay and dry-run.
    """

    isLeaf = True

    def __init__(self, db, reactor, dispatcher=None, actions_token=None,
                 loopback_only=True, allow_replay=False):
        super().__init__()
        if actions_token is not None and len(actions_token) < 8:
            raise ValueError('the actions token must have at least 8 '
                             'characters')
        self.db = db
        self.reactor = reactor
        self.dispatcher = dispatcher
        self.actions_token = actions_token
        self.loopback_only = loopback_only
        self.allow_replay = allow_replay

    # ------------------------------------------------------- routing

    def render(self, request):
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        path = request.path.decode('utf-8', 'replace')
        is_api = path.startswith('/api/')
        try:
            self._check_host(request)
            if is_api:
                return self._api(request, path[len('/api/'):])
            return self._page(request, path)
        except HTTPError as e:
            return self._error(request, e.status, str(e), is_api)

    def _check_host(self, request):
        if not self.loopback_only:
            return
        host = (request.getHeader('host') or '').rsplit(':', 1)[0]
        if host.strip('[]') not in _LOOPBACK_NAMES:
            raise HTTPError(403, 'this dashboard only answers requests for '
                            'a loopback address, not %r' % (host,))

    def _page(self, request, path):
        if request.method not in (b'GET', b'HEAD'):
            raise HTTPError(405, 'pages only answer GET')
        parts = path.strip('/').split('/')
        if path == '/' or (len(parts) == 2 and parts[0] == 'jobs'):
            name = 'dashboard.html'
        elif len(parts) == 1 and parts[0] in STATIC:
            name = parts[0]
        else:
            raise HTTPError(404, 'no page at %s' % (path,))
        request.setHeader(b'Content-Type', STATIC[name].encode('ascii'))
        return _read_static(name)

    def _api(self, request, path):
        parts = path.split('/')
        params = self._params(request)
        method = request.method
        if parts == ['overview']:
            self._require(method, b'GET')
            self._only(params, ())
            return self._read(request, webapi.overview,
                              self._dispatcher_status(),
                              self.actions_token is not None,
                              self.allow_replay)
        if parts == ['jobs']:
            self._require(method, b'GET')
            return self._read(request, webapi.jobs, params)
        if len(parts) == 2 and parts[0] == 'jobs':
            self._require(method, b'GET')
            self._only(params, ('database',))
            return self._read(request, webapi.job_detail, parts[1],
                              params.get('database'))
        if len(parts) == 3 and parts[0] == 'jobs' and parts[2] in ACTIONS:
            self._require(method, b'POST')
            self._only(params, ('database',))
            self._authorize(request)
            return self._read(request, ACTIONS[parts[2]], parts[1],
                              params.get('database'), commit=True)
        if len(parts) == 3 and parts[0] == 'jobs' and (
                parts[2] in SANDBOX_RUNS):
            self._require(method, b'POST')
            self._only(params, ('database',))
            if not self.allow_replay:
                raise HTTPError(403, 'replay and dry-run are disabled: they '
                                'run job code in the dashboard\'s process; '
                                'start it with --allow-replay to enable them')
            return self._read(request, SANDBOX_RUNS[parts[2]], parts[1],
                              params.get('database'))
        raise HTTPError(404, 'no API at /api/%s' % (path,))

    # ------------------------------------------------------- checks

    @staticmethod
    def _params(request):
        """The query parameters (name -> text); a name given twice is an
        error."""
        query = request.uri.decode('utf-8', 'replace').partition('?')[2]
        try:
            pairs = urllib.parse.parse_qsl(
                query, keep_blank_values=True, strict_parsing=bool(query),
                errors='strict')
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, 'malformed query string: %s' % (e,))
        res = {}
        for name, value in pairs:
            if name in res:
                raise HTTPError(400, 'parameter %r given twice' % (name,))
            res[name] = value
        return res

    @staticmethod
    def _only(params, names):
        unknown = sorted(set(params).difference(names))
        if unknown:
            raise HTTPError(400, 'unknown parameter %s%s' % (
                ', '.join(repr(name) for name in unknown),
                ' (parameters: %s)' % (', '.join(names),) if names else
                ' (this request takes none)'))

    @staticmethod
    def _require(method, expected):
        if method != expected and not (expected == b'GET'
                                        and method == b'HEAD'):
            raise HTTPError(405, 'use %s here, not %s' % (
                expected.decode('ascii'), method.decode('ascii', 'replace')))

    def _authorize(self, request):
        if self.actions_token is None:
            raise HTTPError(403, 'actions are disabled: start the dashboard '
                            'with an actions token to enable them')
        scheme, _, token = (request.getHeader('authorization') or ''
                            ).partition(' ')
        expected = self.actions_token.encode('utf-8')
        if scheme.lower() != 'bearer' or not hmac.compare_digest(
                token.strip().encode('utf-8'), expected):
            request.setHeader(b'WWW-Authenticate', b'Bearer')
            raise HTTPError(401, 'actions need the header "Authorization: '
                            'Bearer <token>" with the actions token')

    def _dispatcher_status(self):
        """The own dispatcher's status (read here, in the reactor thread)."""
        if self.dispatcher is None:
            return None
        return monitor.dispatcher_status(self.dispatcher)

    # ------------------------------------------------------- answers

    def _read(self, request, func, *args, commit=False):
        """Answer with ``func(conn, *args)`` as JSON, computed in a pool
        thread."""
        pool = self.reactor.getThreadPool()
        d = twisted.internet.threads.deferToThreadPool(
            self.reactor, pool, self._in_thread, func, args, commit)
        gone = []  # the client left: nobody to answer
        request.notifyFinish().addErrback(lambda ignored: gone.append(1))
        d.addCallback(self._answer, request, gone)
        d.addErrback(self._failed, request, gone)
        return twisted.web.server.NOT_DONE_YET

    def _in_thread(self, func, args, commit):
        """``(status, JSON bytes)``; the connection is closed on return.

        ``commit``: commit the changes, retrying conflict errors (a
        dispatcher may have changed the queue meanwhile).
        """
        # A tolerant connection: jobs whose code is missing in this process
        # are shown, cancelled and retried too.
        tm = transaction.TransactionManager()
        with tolerant.connection(self.db, tm) as conn, \
                monitor.using_dispatcher(self.dispatcher):
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                try:
                    body = webapi.encoder.encode(func(conn, *args))
                    if commit:
                        tm.commit()
                    return 200, body.encode('utf-8')
                except webapi.RequestError as e:
                    return e.status, _error_json(str(e))
                except ZODB.POSException.ConflictError:
                    tm.abort()
                    if attempt == CONFLICT_ATTEMPTS:
                        raise

    @staticmethod
    def _answer(answer, request, gone):
        if gone:
            return
        status, body = answer
        request.setResponseCode(status)
        request.setHeader(b'Content-Type', b'application/json')
        request.write(body)
        request.finish()

    def _failed(self, failure, request, gone):
        if gone:
            return
        logs.log.error('dashboard request %s %s failed',
                       request.method.decode('ascii', 'replace'),
                       request.uri.decode('utf-8', 'replace'),
                       exc_info=(failure.type, failure.value,
                                 failure.getTracebackObject()))
        message = ' '.join(str(failure.value).split())
        self._answer((500, _error_json('%s: %s' % (
            failure.type.__name__, message))), request, gone)

    @staticmethod
    def _error(request, status, message, is_api):
        request.setResponseCode(status)
        if is_api:
            request.setHeader(b'Content-Type', b'application/json')
            return _error_json(message)
        request.setHeader(b'Content-Type', b'text/plain; charset=utf-8')
        return ('%d %s\n' % (status, message)).encode('utf-8')


def _error_json(message):
    return json.dumps({'error': message}).encode('utf-8')


class _Site(twisted.web.server.Site):
    """A site whose errors outside the resource (such as a malformed
    request line) never show a traceback."""

    displayTracebacks = False
    noisy = False


def start_dashboard(db, reactor, port, host='127.0.0.1', dispatcher=None,
                    actions_token=None, allow_replay=False):
    """Serve the dashboard of ``db`` on ``host:port``; the listening port.

    ``port=0`` picks a free port (``getHost().port`` tells which); stop
    it with ``stopListening()`` in the reactor thread.  ``dispatcher``
    adds its status to the overview.  ``actions_token`` (at least 8
    characters) enables the retry, cancel and abort actions for requests
    that send it as a bearer token.  ``allow_replay`` enables replaying
    failed jobs and dry-running pending ones in a sandbox (job code runs in
    this process; see :mod:`zc.async.ops.sandbox`).  Call this in the reactor
    thread, before the reactor runs, or from any thread while the reactor
    runs in ``dispatcher.thread``.
    """
    resource = Dashboard(db, reactor, dispatcher, actions_token,
                         loopback_only=_is_loopback(host),
                         allow_replay=allow_replay)
    site = _Site(resource)

    def listen():
        return reactor.listenTCP(port, site, interface=host)
    if _in_other_thread(reactor, dispatcher):
        res = twisted.internet.threads.blockingCallFromThread(reactor, listen)
    else:
        res = listen()
    address = res.getHost()
    logs.log.info('dashboard listening on http://%s:%d/ (actions %s%s)',
                  address.host, address.port,
                  'enabled' if actions_token else 'disabled',
                  '; replay and dry-run enabled' if allow_replay else '')
    return res


def _in_other_thread(reactor, dispatcher):
    """Whether ``reactor`` runs in a thread other than this one."""
    thread = getattr(dispatcher, 'thread', None)
    if thread is not None:
        return thread.is_alive() and thread is not threading.current_thread()
    return reactor.running and not twisted.python.threadable.isInIOThread()
