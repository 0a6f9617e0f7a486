"""The data of the web dashboard: JSON-ready answers read from the database.

Every function takes an open ZODB connection (the dashboard opens a private
one for each request, in a pool thread; see :mod:`zc.async.ops.web`) and
returns plain data that :data:`encoder` turns into JSON.  Jobs are chosen
and described with the ``asyncdb`` monitor's tools
(:mod:`zc.async.ops.monitorquery`, :mod:`zc.async.monitordb`), so the dashboard
and the monitor agree on states, filters, order and job summaries.

Bad input raises :class:`RequestError` with the HTTP status to answer
(400 for a malformed request, 404 for something that does not exist).
The actions, :func:`retry`, :func:`cancel` and :func:`abort`, change the
database; the caller commits.  :func:`replay` and :func:`dry_run` run a job
in a sandbox (:mod:`zc.async.ops.sandbox`) and change nothing.
"""
import itertools

import ZODB.broken
import ZODB.POSException
import ZODB.utils

from .. import clock
from .. import interfaces
from .. import jobactions
from .. import loadable
from .. import logs
from .. import monitor
from .. import monitordb
from . import monitorquery
from . import sandbox
from ..dispatcher import getId
from ..job import isFailure
from ..loadable import callable_name

#: Compact JSON with the monitor's encodings (times, durations, job ids).
encoder = monitor.Encoder(sort_keys=True)

#: The states a job list shows when the request names none.
DEFAULT_STATES = ('pending', 'assigned', 'active', 'callbacks', 'completed')
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Query parameters of the job list besides the filters.
LIST_PARAMETERS = ('state', 'offset', 'limit')


class RequestError(ValueError):
    """A request the dashboard cannot answer; ``status`` is 400 or 404."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------- overview


def _dispatchers(queue, now):
    """Every dispatcher record of ``queue``, alive or not, by UUID."""
    res = {}
    for uuid, agents in queue.dispatchers.items():
        info = monitordb._dispatcher_status(agents, lambda name: True, now)
        info['activated'] = agents.activated
        info['uptime'] = (None if agents.activated is None
                          else now - agents.activated)
        res[str(uuid)] = info
    return res


def _quotas(queue):
    return {name: {'size': quota.size, 'len': len(quota)}
            for name, quota in queue.quotas.items()}


def _held_counts(queue):
    """How many jobs ``queue``'s agents hold, by status word."""
    counts = dict.fromkeys(monitorquery.HELD_STATES, 0)
    for agents in queue.dispatchers.values():
        for agent in agents.values():
            for job in agent:
                word = loadable.status_word(job)
                if word in counts:
                    counts[word] += 1
    return counts


def _recent_counts(conn, queue_name):
    """Jobs of queue ``queue_name`` that completed in the last hour.

    (Counting every completed job would read a week of jobs.)
    """
    res = {}
    for state in ('succeeded', 'failed'):
        query = monitorquery.JobQuery(
            [state], queue=glob_escape(queue_name),
            callbacks_completed='since1H')
        res[state + ' last hour'] = sum(1 for job in query.jobs(conn))
    return res


def glob_escape(name):
    """A glob that matches exactly ``name``."""
    return ''.join('[%s]' % (char,) if char in '*?[' else char
                   for char in name)


def overview(conn, dispatcher_status=None, actions=False, replay=False):
    """Queues (pending, job counts, quotas, dispatchers and agents, and
    schedules: see :func:`zc.async.monitordb.schedule_summary`).

    ``dispatcher_status`` is the status of the dashboard's own dispatcher
    (:meth:`~zc.async.dispatcher.Dispatcher.getStatusInfo`), if any;
    ``actions`` tells whether the dashboard's actions are enabled,
    ``replay`` whether replay and dry-run are.
    Dispatchers are listed whether activated or not, with ``dead`` (no
    ping within the ping death interval), ``last ping`` and ``uptime``
    (null when not activated).
    """
    now = clock.now()
    found = {}
    for queue in monitorquery.queues(conn):
        counts = {'pending': len(queue)}
        counts.update(_held_counts(queue))
        counts['completed'] = sum(
            len(agent.completed) for agents in queue.dispatchers.values()
            for agent in agents.values())
        counts.update(_recent_counts(conn, queue.name))
        found[queue.name] = {
            'counts': counts, 'quotas': _quotas(queue),
            'dispatchers': _dispatchers(queue, now),
            'schedules': monitordb.schedule_summaries(queue)}
    return {'now': now, 'database': conn.db().database_name,
            'queues': found, 'this dispatcher': dispatcher_status,
            'actions': actions, 'replay': replay}


# ------------------------------------------------------------ job lists


def _callable_name(job):
    try:
        return monitorquery.callable_name(job.callable, True)
    except Exception:  # a callable whose class is gone: still list the job
        return logs.custom_repr(job)


def job_row(job):
    """The short description of ``job`` in a job list."""
    if isinstance(job, ZODB.broken.Broken):  # its class is missing here
        summary = monitordb.jobsummary(job)
        row = {key: summary[key] for key in (
            'status', 'failed', 'queue', 'agent', 'dispatcher',
            'begin after', 'active start', 'active end')}
        row.update(id=getId(job), callable=callable_name(job))
        return row
    agent = job.agent
    queue = job.queue
    return {
        'id': getId(job),
        'callable': _callable_name(job),
        'status': loadable.status_word(job),
        'failed': isFailure(job.result),
        'queue': None if queue is None else queue.name,
        'agent': None if agent is None else agent.name,
        'dispatcher': None if agent is None else str(agent.parent.UUID),
        'begin after': job.begin_after,
        'active start': job.active_start,
        'active end': job.active_end,
    }


def parse_states(text):
    """The state words of a comma-separated ``state`` parameter."""
    if not text or text == 'all':
        return DEFAULT_STATES
    return tuple(word.strip() for word in text.split(',') if word.strip())


def parse_count(text, name, default, maximum=None):
    """A non-negative integer parameter (at most ``maximum``)."""
    if text is None or text == '':
        return default
    try:
        res = monitor.parse_int(text, name)
    except ValueError as e:
        raise RequestError(str(e)) from None
    if maximum is not None and res > maximum:
        raise RequestError('%s must be at most %d, not %d'
                           % (name, maximum, res))
    return res


def jobs(conn, params):
    """A page of the jobs that the query ``params`` (name -> text) chooses.

    ``state`` is a comma-separated list of states (those of ``asyncdb
    jobs``; ``all`` or none means every state); the other parameters,
    ``offset`` and ``limit`` aside, are the ``asyncdb`` filters
    (``queue``, ``callable``, ``agent``, ``uuid``, ``requested_start``,
    ``start``, ``end``, ``callbacks_completed``).  The answer has the
    ``jobs`` (see :func:`job_row`), in the ``asyncdb jobs`` order, and
    ``offset``, ``limit`` and ``more`` (whether more jobs follow).
    """
    unknown = set(params).difference(
        LIST_PARAMETERS + monitorquery.FILTERS)
    if unknown:
        raise RequestError('unknown parameter %s (parameters: %s)' % (
            ', '.join(repr(name) for name in sorted(unknown)),
            ', '.join(LIST_PARAMETERS + monitorquery.FILTERS)))
    offset = parse_count(params.get('offset'), 'offset', 0)
    limit = parse_count(params.get('limit'), 'limit', DEFAULT_LIMIT,
                        MAX_LIMIT)
    filters = {name: value for name, value in params.items()
               if name in monitorquery.FILTERS and value != ''}
    try:
        query = monitorquery.JobQuery(
            parse_states(params.get('state')), **filters)
        page = list(itertools.islice(
            query.jobs(conn), offset, offset + limit + 1))
    except ValueError as e:
        raise RequestError(str(e)) from None
    return {'jobs': [job_row(job) for job in page[:limit]],
            'offset': offset, 'limit': limit, 'more': len(page) > limit}


# ------------------------------------------------------------ one job


def get_job(conn, oid_text, database=None):
    """The job of oid ``oid_text`` in ``database`` (default: ``conn``'s).
    """
    try:
        oid = monitor.parse_int(oid_text, 'oid')
    except ValueError as e:
        raise RequestError(str(e)) from None
    try:
        other = conn if database is None else conn.get_connection(database)
    except KeyError:
        raise RequestError('unknown database %r' % (database,), 404
                           ) from None
    try:
        res = other.get(ZODB.utils.p64(oid))
    except ZODB.POSException.POSKeyError:
        raise RequestError('no job with oid %d in database %r' % (
            oid, other.db().database_name), 404) from None
    if not monitordb.is_job(res):
        raise RequestError('oid %d is not a job' % (oid,), 404)
    return res


def _retry_data(job):
    """The retry policy's factory and, once made, its data."""
    # The policy is made on first use (by getRetryPolicy, which would
    # write); read the one the job holds, if any.
    policy = job._retry_policy
    data = getattr(policy, 'data', None)
    return {'policy factory': job.retry_policy_factory,
            'policy': policy,
            'data': None if data is None else dict(data.items())}


def job_detail(conn, oid_text, database=None):
    """Everything the job page shows about one job.

    The ``asyncdb job`` summary (see
    :func:`zc.async.monitordb.jobsummary`) plus ``id``, ``callable``
    (dotted name), ``annotations`` (reprs), ``retry`` (policy factory,
    policy and its data) and ``traceback`` (the full traceback text of a
    failed job, else null).
    """
    job = get_job(conn, oid_text, database)
    res = monitordb.jobsummary(job)
    if isinstance(job, ZODB.broken.Broken):  # its class is missing here
        res.update({'id': getId(job), 'callable': callable_name(job),
                    'annotations': {}, 'retry': None, 'traceback': None})
        return res
    result = job.result
    res.update({
        'id': getId(job),
        'callable': _callable_name(job),
        'annotations': {str(key): logs.bounded_repr(value)
                        for key, value in job.annotations.items()},
        'retry': _retry_data(job),
        'traceback': (result.getTraceback() if isFailure(result)
                      else None),
    })
    return res


# -------------------------------------------------------------- actions


def cancel(conn, oid_text, database=None):
    """Take the PENDING job ``oid_text`` out of its queue (``queue.remove``).

    The job becomes NEW again, in no queue, and is never run; the caller
    commits.  Other jobs: RequestError (409).
    """
    job = get_job(conn, oid_text, database)
    status = loadable.status_word(job)
    if status != 'pending':
        raise RequestError('only pending jobs can be cancelled; job %s is '
                           '%s' % (oid_text, status), 409)
    jobactions.remove(job)  # also a job that cannot be changed here
    return {'cancelled': getId(job)}


def abort(conn, oid_text, database=None):
    """Ask for the abort of the pending or running job ``oid_text``
    (``job.requestAbort()``).

    The dispatcher running it stops it once the caller commits (it fails
    with AbortRequested); a pending job fails at once (committed).  Jobs
    that have their result: RequestError (409).
    """
    job = get_job(conn, oid_text, database)
    word = loadable.status_word(job)
    if word not in ('pending', 'assigned', 'active'):
        raise RequestError('only pending or running jobs can be aborted; job '
                           '%s is %s' % (oid_text, word), 409)
    try:
        jobactions.abort(job)
    except jobactions.Refused as e:  # a job that cannot be changed here
        raise RequestError(str(e), 409) from None
    return {'abort requested': getId(job)}


def retry(conn, oid_text, database=None):
    """Put a new job, a copy of the failed job ``oid_text``, in its queue.

    The copy has the same callable, arguments, keyword arguments, quota
    names, retry policy factory and failure log level; not the callbacks
    (they ran for the failed job).  The failed job is left as it is.  The
    caller commits.  Jobs that did not fail, or whose queue is gone:
    RequestError (409).
    """
    job = get_job(conn, oid_text, database)
    if loadable.status_word(job) != 'completed' or not isFailure(
            getattr(job, 'result', None)):
        raise RequestError('only failed jobs can be retried; job %s is %s'
                           % (oid_text, loadable.status_word(job)), 409)
    queue = job.queue
    if queue is None:
        raise RequestError('job %s has no queue to retry it in'
                           % (oid_text,), 409)
    copy = job._replica()
    queue._p_jar.add(copy)  # gives the new job its oid now
    queue.put(copy)
    return {'retried': getId(job),
            'new job': getId(copy)}


# -------------------------------------------------------------- sandbox


def replay(conn, oid_text, database=None):
    """The report of the failed job ``oid_text`` called again in a sandbox
    at the snapshot it saw (:func:`zc.async.ops.sandbox.replay`, as
    ``ISandboxReport.as_dict``).  Nothing is written.  Jobs that did not
    fail, or whose snapshot is gone: RequestError (409).
    """
    job = get_job(conn, oid_text, database)
    if job.status != interfaces.COMPLETED or not isFailure(job.result):
        raise RequestError('only failed jobs can be replayed; job %s is %s'
                           % (oid_text, loadable.status_word(job)), 409)
    return _in_sandbox(sandbox.replay, job._p_jar.db(), job._p_oid)


def dry_run(conn, oid_text, database=None):
    """The report of the pending job ``oid_text`` run against the current
    data in a sandbox (:func:`zc.async.ops.sandbox.dry_run`).  Nothing is
    written; the job stays pending.  Other jobs: RequestError (409).
    """
    job = get_job(conn, oid_text, database)
    if job.status != interfaces.PENDING:
        raise RequestError('only pending jobs can be dry-run; job %s is %s'
                           % (oid_text, loadable.status_word(job)), 409)
    return _in_sandbox(sandbox.dry_run, conn.db(), job)


def _in_sandbox(run, *args):
    try:
        return run(*args).as_dict()
    except (interfaces.AsyncError, ValueError) as e:
        raise RequestError(str(e), 409) from None
