"""Prometheus metrics of zc.async dispatchers (the ``metrics`` extra).

:func:`install_metrics` adds a listener to a
:class:`zc.async.dispatcher.Dispatcher` (see its ``notify``) that counts
job attempts and times jobs and polls, and a collector that reads the
database when scraped; :func:`start_metrics_server` serves ``/metrics``
over HTTP (on 127.0.0.1 unless told otherwise).

Counted from the dispatcher's events (labels ``queue`` and ``agent``):

- ``zc_async_jobs_started_total``: job attempts started by worker threads;
- ``zc_async_jobs_succeeded_total`` and ``zc_async_jobs_failed_total``:
  attempts that ended (a job whose retry policy rescheduled it counts as
  succeeded, with a None result; reassigned jobs count as neither);
- ``zc_async_job_duration_seconds``: histogram of the attempts' durations;
- ``zc_async_poll_duration_seconds``: histogram of the polls' database
  work (no labels);
- ``zc_async_claim_errors_total{queue, reason}``: claims that failed
  (reason ``error``) and pending jobs found unloadable, once per job and
  dispatcher (reason ``unloadable``: see :mod:`zc.async.unloadable`).

Read from the database at each scrape (label ``database``, the ZODB
database name), cheaply: queue lengths, the jobs agents hold, and the
length counters of the agents' completed collections:

- ``zc_async_jobs{queue, status}``: ``pending``, ``assigned``,
  ``active``, ``callbacks`` and ``completed`` (completed in the last week
  or so);
- ``zc_async_dispatcher_up{uuid}``: 1 for a dispatcher activated in the
  database and not dead, 0 for a dead one, and 0 for a dispatcher of this
  process that is not activated;
- ``zc_async_dispatcher_last_ping_age_seconds{uuid}``: time since the
  dispatcher's last ping;
- ``zc_async_dispatcher_degraded{uuid}``: 1 for an activated dispatcher
  whose last claim failed for one of its agents, else 0;
- ``zc_async_unloadable_jobs{queue}``: pending jobs that a live
  dispatcher of the queue found it cannot load.

``prometheus_client`` is optional: without it, :func:`install_metrics`
and :func:`start_metrics_server` raise :class:`MetricsUnavailable`.
"""
import threading
import weakref

import transaction

from .. import logs
from ..monitordb import status as db_status
from ..loadable import status_word
from .monitorquery import queues

try:
    import prometheus_client
    import prometheus_client.core
except ImportError:  # the ``metrics`` extra is not installed
    prometheus_client = None

#: Buckets (seconds) of the job duration histogram.
JOB_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900,
                        3600)
#: Buckets (seconds) of the poll duration histogram.
POLL_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1, 2.5, 5, 10)

#: The statuses of the ``zc_async_jobs`` gauge, in exposition order.
JOB_STATUSES = ('pending', 'assigned', 'active', 'callbacks', 'completed')


class MetricsUnavailable(RuntimeError):
    """prometheus_client is missing; the message says how to install it."""


def _require():
    if prometheus_client is None:
        raise MetricsUnavailable(
            'Prometheus metrics need prometheus_client: install '
            "zc.async's metrics extra (pip install 'zc.async[metrics]')")


# Per registry: the metric objects, shared by the dispatchers installed
# in it (a registry refuses a second metric of the same name).
_installed = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def install_metrics(dispatcher, registry=None):
    """Count and time ``dispatcher``'s jobs and polls in ``registry``
    (default: prometheus_client's global ``REGISTRY``), and expose its
    database's state there at scrape time.

    Returns a :class:`DispatcherMetrics`; its ``uninstall()`` stops the
    counting (the counters keep their values).
    """
    _require()
    if registry is None:
        registry = prometheus_client.REGISTRY
    with _lock:
        metrics = _installed.get(registry)
        if metrics is None:
            metrics = _installed[registry] = _Metrics(registry)
    res = DispatcherMetrics(dispatcher, metrics)
    dispatcher.listeners.append(res)
    metrics.collector.add(dispatcher)
    return res


def start_metrics_server(port, host='127.0.0.1', registry=None):
    """Serve ``registry`` (default: the global one) at
    ``http://host:port/metrics`` from a daemon thread.

    ``port`` 0 picks a free port (see the answer's ``server_port``).
    Returns the server; ``shutdown()`` and ``server_close()`` stop it.
    Raises OSError if the address cannot be used.
    """
    _require()
    if registry is None:
        registry = prometheus_client.REGISTRY
    server, _thread = prometheus_client.start_http_server(
        port, addr=host, registry=registry)
    return server


class _Metrics:
    """The metric objects of one registry."""

    def __init__(self, registry):
        labels = ('queue', 'agent')
        self.started = prometheus_client.Counter(
            'zc_async_jobs_started', 'Job attempts started by worker threads.',
            labels, registry=registry)
        self.succeeded = prometheus_client.Counter(
            'zc_async_jobs_succeeded', 'Job attempts that ended without a '
            'failure.', labels, registry=registry)
        self.failed = prometheus_client.Counter(
            'zc_async_jobs_failed', 'Job attempts that ended with a failure.',
            labels, registry=registry)
        self.job_duration = prometheus_client.Histogram(
            'zc_async_job_duration_seconds', 'Durations of job attempts.',
            labels, buckets=JOB_DURATION_BUCKETS, registry=registry)
        self.poll_duration = prometheus_client.Histogram(
            'zc_async_poll_duration_seconds', 'Durations of the database '
            'work of dispatcher polls.', buckets=POLL_DURATION_BUCKETS,
            registry=registry)
        self.claim_errors = prometheus_client.Counter(
            'zc_async_claim_errors', 'Claims that failed (reason "error") '
            'and pending jobs found unloadable, once per job and '
            'dispatcher (reason "unloadable").', ('queue', 'reason'),
            registry=registry)
        self.collector = DatabaseCollector()
        registry.register(self.collector)


class DispatcherMetrics:
    """The listener that counts one dispatcher's events (see
    :meth:`zc.async.dispatcher.Dispatcher.notify`)."""

    def __init__(self, dispatcher, metrics):
        self.dispatcher = dispatcher
        self._metrics = metrics

    def __call__(self, event, info):
        metrics = self._metrics
        if event == 'poll':
            if info['duration'] is not None:
                metrics.poll_duration.observe(info['duration'])
            return
        if event == 'claim error':
            metrics.claim_errors.labels(info['queue'], info['reason']).inc()
            return
        labels = (info['queue'], info['agent'])
        if event == 'job started':
            metrics.started.labels(*labels).inc()
        elif event == 'job finished' and not info['reassigned']:
            ended = metrics.failed if info['failed'] else metrics.succeeded
            ended.labels(*labels).inc()
            if info['started'] is not None and info['completed'] is not None:
                metrics.job_duration.labels(*labels).observe(
                    (info['completed'] - info['started']).total_seconds())

    def uninstall(self):
        """Stop counting this dispatcher's events and reading its database
        (unless another installed dispatcher uses it)."""
        if self in self.dispatcher.listeners:
            self.dispatcher.listeners.remove(self)
        self._metrics.collector.discard(self.dispatcher)


class DatabaseCollector:
    """A prometheus_client collector reading the databases of the
    installed dispatchers at each scrape (each database once)."""

    def __init__(self):
        self._dispatchers = []
        self._lock = threading.Lock()

    def add(self, dispatcher):
        with self._lock:
            self._dispatchers.append(dispatcher)

    def discard(self, dispatcher):
        with self._lock:
            if dispatcher in self._dispatchers:
                self._dispatchers.remove(dispatcher)

    def describe(self):
        """No description: the registry then does not collect at
        registration (the database may not be ready)."""
        return []

    def collect(self):
        core = prometheus_client.core
        jobs = core.GaugeMetricFamily(
            'zc_async_jobs', 'Jobs by queue and status (completed: kept '
            'in the agents\' completed collections, about a week).',
            labels=('database', 'queue', 'status'))
        up = core.GaugeMetricFamily(
            'zc_async_dispatcher_up', 'Whether a dispatcher is activated '
            'and not dead.', labels=('database', 'uuid'))
        ping_age = core.GaugeMetricFamily(
            'zc_async_dispatcher_last_ping_age_seconds', 'Seconds since a '
            'dispatcher last pinged.', labels=('database', 'uuid'))
        degraded = core.GaugeMetricFamily(
            'zc_async_dispatcher_degraded', 'Whether an activated '
            'dispatcher\'s last claim failed for one of its agents.',
            labels=('database', 'uuid'))
        unloadable = core.GaugeMetricFamily(
            'zc_async_unloadable_jobs', 'Pending jobs that a live '
            'dispatcher of the queue cannot load.',
            labels=('database', 'queue'))
        families = (jobs, up, ping_age, degraded, unloadable)
        with self._lock:
            dispatchers = list(self._dispatchers)
        databases = {}
        for dispatcher in dispatchers:
            databases.setdefault(dispatcher.db, []).append(dispatcher)
        for db, local in databases.items():
            try:
                _read_database(db, local, *families)
            except Exception:
                # A scrape must not fail because one database is away.
                logs.log.warning('cannot read metrics from database %r',
                                 db.database_name, exc_info=True)
        return list(families)


def _read_database(db, local_dispatchers, jobs, up, ping_age, degraded,
                   unloadable):
    """Add ``db``'s job counts, dispatcher liveness and trouble to the
    families."""
    name = db.database_name
    conn = db.open(transaction_manager=transaction.TransactionManager())
    try:
        for queue in queues(conn):
            counts = _job_counts(queue)
            for status in JOB_STATUSES:
                jobs.add_metric((name, queue.name, status), counts[status])
        seen = _add_liveness(conn, name, up, ping_age, degraded, unloadable)
        for dispatcher in local_dispatchers:
            if str(dispatcher.UUID) not in seen:
                up.add_metric((name, str(dispatcher.UUID)), 0)
    finally:
        conn.transaction_manager.abort()  # metrics never change data
        conn.close()


def _job_counts(queue):
    """``{status: count}`` of ``queue``: pending from its length, held
    jobs by status, completed from the completed collections' lengths."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    counts['pending'] = len(queue)
    for agents in queue.dispatchers.values():
        for agent in agents.values():
            for job in agent:
                word = status_word(job)
                if word in counts:
                    counts[word] += 1
            counts['completed'] += len(agent.completed)
    return counts


def _add_liveness(conn, name, up, ping_age, degraded, unloadable):
    """Add the activated dispatchers of every queue (merged by UUID), and
    the jobs they cannot load; return their UUID strings."""
    alive = {}  # {uuid: [up, smallest ping age in seconds or None]}
    failing = set()  # UUIDs whose claims fail
    for queue_name, queue_status in db_status(conn).items():
        bad = set()
        for uuid, found in queue_status['dispatchers'].items():
            entry = alive.setdefault(uuid, [1, None])
            if found['dead']:
                entry[0] = 0
            else:
                bad.update(map(tuple, found.get('unloadable jobs', ())))
            if found.get('degraded'):
                failing.add(uuid)
            since = found['since ping']
            if since is not None:
                seconds = since.total_seconds()
                entry[1] = seconds if entry[1] is None else min(entry[1],
                                                                seconds)
        unloadable.add_metric((name, queue_name), len(bad))
    for uuid, (is_up, age) in sorted(alive.items()):
        up.add_metric((name, uuid), is_up)
        degraded.add_metric((name, uuid), int(uuid in failing))
        if age is not None:
            ping_age.add_metric((name, uuid), age)
    return set(alive)
