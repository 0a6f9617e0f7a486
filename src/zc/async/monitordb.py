"""The ``asyncdb`` monitor command: jobs and dispatchers, from the database.

Every tool takes a ZODB connection as its first argument (the command
opens a private one to the default dispatcher's database; see
:func:`zc.async.monitor.monitor`) and only reads.  The states and filters
that choose jobs are in :mod:`zc.async.ops.monitorquery`; modifier parsing
and JSON encoding are those of :mod:`zc.async.monitor`.
"""
import inspect

import ZODB.broken
import ZODB.POSException
import ZODB.utils

from . import clock
from . import interfaces
from . import logs
from . import retry
from . import schedule
from . import tolerant
from . import utils
from .dispatcher import getId
from .job import isFailure
from .loadable import status_word
from .monitor import monitor, parse_int, parse_uuid, tool_help
from .ops.monitorquery import JobQuery, callable_name, glob_test, queues

_DISPLAYS = ('default', 'repr', 'details')
_TRACEBACK_DETAILS = ('default', 'brief', 'verbose')
_ALL_STATES = ('pending', 'assigned', 'active', 'callbacks', 'completed')
_STATS_KEYS = ('pending', 'assigned', 'active', 'callbacks', 'succeeded',
               'failed')

# -------------------------------------------------------------- helpers


def _duration(start, end, now):
    """``end - start`` (``now - start`` while ``end`` is None), or None."""
    if start is None:
        return None
    return (now if end is None else end) - start


def _job_id(obj):
    """The id of a stored job, else the object's custom repr."""
    if obj._p_oid is not None and obj._p_jar is not None:
        return getId(obj)
    return logs.custom_repr(obj)


def jobsummary(job):
    """A mapping describing ``job`` (the "details" display)."""
    if isinstance(job, ZODB.broken.Broken):
        return _recorded_summary(job)
    now = clock.now()
    agent = job.agent
    queue = job.queue
    result = job.result
    if isFailure(result):
        result = result.getTraceback(elideFrameworkCode=True, detail='brief')
    else:
        result = logs.bounded_repr(result)
    return {
        'repr': repr(job),
        'args': [logs.bounded_repr(arg) for arg in job.args],
        'kwargs': {key: logs.bounded_repr(value)
                   for key, value in job.kwargs.items()},
        'begin after': job.begin_after,
        'active start': job.active_start,
        'active end': job.active_end,
        'initial callbacks end': job.initial_callbacks_end,
        'wait': _duration(job.begin_after, job.active_start, now),
        'active': _duration(job.active_start, job.active_end, now),
        'status': status_word(job),
        'failed': isFailure(job.result),
        'result': result,
        'quota names': list(job.quota_names),
        'agent': None if agent is None else agent.name,
        'dispatcher': None if agent is None else str(agent.parent.UUID),
        'queue': None if queue is None else queue.name,
        'callbacks': [_job_id(callback) for callback in job.callbacks],
        **_feature_keys(job),
    }


def _feature_keys(job):
    """The summary keys of features a job may use: "unique key" (if it has
    one) and "attempt" (if its retry policy factory is ``retrying``)."""
    keys = {}
    if job.unique_key is not None:
        keys['unique key'] = job.unique_key
    settings = job.retry_policy_factory
    if isinstance(settings, retry.Retrying):
        keys['attempt'] = '%d of %d' % (retry.attempt(job), settings.attempts)
    return keys
def _recorded_summary(job):
    """The summary of a job whose class is missing here: what its record
    says of its status, queue and times."""
    state = job.__getstate__() or {}
    parent = state.get('parent')
    res = dict.fromkeys(SUMMARY_KEYS)
    res.update({
        'repr': '<%s (oid %d): its class cannot be imported here>' % (
            tolerant.dotted_name(type(job)), ZODB.utils.u64(job._p_oid)),
        'args': [], 'kwargs': {}, 'quota names': [], 'callbacks': [],
        'status': status_word(job), 'failed': False,
        'queue': parent.name if interfaces.IQueue.providedBy(parent)
        else None})
    for key, name in (('begin after', '_begin_after'),
                      ('active start', '_active_start'),
                      ('active end', '_active_end')):
        res[key] = state.get(name)
    return res


#: The keys of a job summary (see :func:`jobsummary`).
SUMMARY_KEYS = (
    'repr', 'args', 'kwargs', 'begin after', 'active start', 'active end',
    'initial callbacks end', 'wait', 'active', 'status', 'failed', 'result',
    'quota names', 'agent', 'dispatcher', 'queue', 'callbacks')


def _displayer(display):
    """How ``display`` shows a job: its id, its repr or its summary."""
    if display == 'detail':  # the 1.5 docstring's spelling (A15)
        display = 'details'
    if display not in _DISPLAYS:
        raise ValueError('display must be one of %s, not %r'
                         % (', '.join(_DISPLAYS), display))
    return {'default': getId, 'repr': repr, 'details': jobsummary}[display]


def get_object(context, oid, database=None):
    """The object ``oid`` (an integer or its text) of database
    ``database`` (default: ``context``'s), or ValueError."""
    oid = parse_int(oid, 'oid')
    try:
        conn = context if database is None else context.get_connection(
            database)
    except KeyError:
        raise ValueError('unknown database %r' % (database,)) from None
    try:
        return conn.get(ZODB.utils.p64(oid))
    except ZODB.POSException.POSKeyError:
        raise ValueError('no object with oid %d in database %r' % (
            oid, conn.db().database_name)) from None


def is_job(obj):
    """Whether ``obj`` is a job, maybe one whose class is missing here."""
    return interfaces.IJob.providedBy(obj) or (
        isinstance(obj, ZODB.broken.Broken)
        and '_callable_root' in (obj.__getstate__() or {}))


def get_job(context, oid, database=None):
    """The job ``oid`` (an integer or its text) of database ``database``."""
    oid = parse_int(oid, 'oid')
    res = get_object(context, oid, database)
    if not is_job(res):
        raise ValueError('oid %d is not a job: %s'
                         % (oid, logs.custom_repr(res)))
    return res


def _first(jobs):
    """The summary of the first of ``jobs``, or None."""
    for job in jobs:
        return jobsummary(job)
    return None


class _Stats:
    """Accumulates the counts and extremes of the jobstats tool."""

    def __init__(self, now):
        self.now = now
        self.counts = dict.fromkeys(_STATS_KEYS, 0)
        self.extremes = {}  # 'longest wait' ... -> (duration, job)

    def add(self, job):
        word = status_word(job)
        if word == 'completed':
            word = 'failed' if isFailure(job.result) else 'succeeded'
        self.counts[word] += 1
        self._compare('wait', _duration(
            job.begin_after, job.active_start, self.now), job)
        self._compare('active', _duration(
            job.active_start, job.active_end, self.now), job)

    def _compare(self, kind, duration, job):
        if duration is None:
            return
        longest = self.extremes.get('longest ' + kind)
        if longest is None or duration > longest[0]:
            self.extremes['longest ' + kind] = (duration, job)
        shortest = self.extremes.get('shortest ' + kind)
        if shortest is None or duration < shortest[0]:  # A14: a minimum
            self.extremes['shortest ' + kind] = (duration, job)

    def result(self, show):
        res = dict(self.counts)
        for kind in ('wait', 'active'):
            for extreme in ('longest ', 'shortest '):
                found = self.extremes.get(extreme + kind)
                res[extreme + kind] = (
                    None if found is None else [found[0], show(found[1])])
        return res


# ------------------------------------------------------------ schedules

def schedule_summaries(queue):
    """:func:`schedule_summary` of each of ``queue``'s schedules, by name
    (see :mod:`zc.async.schedule`)."""
    schedules = schedule.schedules_of(queue)
    return [] if schedules is None else [
        schedule_summary(found) for found in schedules.values()]


def schedule_summary(found):
    """A summary of the schedule ``found`` (plain, JSON-ready data)."""
    job = found.last_job
    queue = found.parent.__parent__ if found.parent else None
    return {
        'name': found.name,
        'queue': None if queue is None else queue.name,
        'callable': _schedule_callable(found),
        'rule': found.rule,
        'catch up': found.catch_up,
        'overlap': found.overlap,
        'next run': found.next_run,
        'last run': found.last_run,
        'last job': None if job is None else getId(job),
        'last job status': None if job is None else status_word(job),
    }


def _schedule_callable(found):
    try:
        return callable_name(found.job.callable, True)
    except Exception:  # a template whose class is gone: still list it
        return logs.custom_repr(found.job)


# ---------------------------------------------------------------- tools

_FILTER_HELP = """
    Filters (each optional, written name:value):

    - callable:GLOB -- the job's callable, by its bare name (such as
      "send_mail*") or, when GLOB has a dot, by its dotted name (such as
      "myapp.mail.*");
    - queue:GLOB -- the name of the job's queue (the default queue is
      named "");
    - agent:GLOB -- the name of the agent that holds (or, for completed
      jobs, held) the job; for pending jobs, the jobs that such an agent's
      filter would accept (agents with a chooser cannot tell);
    - uuid:UUID -- the dispatcher whose agents hold (held, would take) the
      job; THIS means this process's dispatcher;
    - requested_start, start, end, callbacks_completed -- when the job
      was asked to begin (begin_after), started, ended, and finished its
      first callbacks: sinceINTERVAL, beforeINTERVAL, or both separated by
      a comma, where INTERVAL (such as 1D2H3M4S: days, hours, minutes,
      seconds, each optional) means that long ago.  Jobs without that time
      do not match.
"""

_STATES_HELP = """
    States (at least one): pending (in a queue), assigned (claimed by an
    agent, not started), active (running), callbacks (running its
    callbacks), and at most one of completed, succeeded and failed
    (finished in the last week or so).
"""


def _with_help(*parts):
    """Append the shared help ``parts`` to the decorated tool's docstring.
    """
    def decorate(func):
        func.__doc__ += ''.join(parts)
        return func
    return decorate


@_with_help(_STATES_HELP, _FILTER_HELP)
def jobs(context, *states, display='default', count=0, **filters):
    """Return jobs in one or more states.

    Usage:

        asyncdb jobs STATE [STATE...] [display:default|repr|details]
                     [count:N] [FILTER:VALUE...]

    The default display shows job ids ([oid, "database name"]; see
    "asyncdb job"); display:repr shows each job's repr, display:details
    (or detail) the summary that "asyncdb job" shows.  count:N shows only
    the first N jobs (0, the default, shows all).  Pending jobs come first,
    by begin_after; then jobs held by agents, by start time; then completed
    jobs, newest first.
    """
    show = _displayer(display)
    found = JobQuery(states, **filters).jobs(context)
    count = parse_int(count, 'count')
    if count:
        found = utils.takecount(found, count)
    return [show(job) for job in found]


@_with_help(_STATES_HELP, _FILTER_HELP)
def count(context, *states, **filters):
    """Count jobs in one or more states.

    Usage:

        asyncdb count STATE [STATE...] [FILTER:VALUE...]

    For example, "asyncdb count completed uuid:THIS" counts the jobs this
    process finished in the last week or so.
    """
    return sum(1 for job in JobQuery(states, **filters).jobs(context))


@_with_help(_FILTER_HELP)
def jobstats(context, *states, display='default', **filters):
    """Return statistics about jobs in one or more states.

    Usage:

        asyncdb jobstats [STATE...] [display:default|repr|details]
                         [FILTER:VALUE...]

    States are as for "asyncdb jobs" (by default all but succeeded and
    failed, which "completed" covers).  The answer counts the chosen jobs
    as "pending", "assigned", "active", "callbacks", "succeeded" and
    "failed", and gives "longest wait", "shortest wait", "longest active"
    and "shortest active", each null or [duration, job].  The wait is the
    time from begin_after to the start (or to now, for jobs not started);
    active is the time from the start to the end (or to now, for jobs
    still running).  The display modifier shows the jobs as for "asyncdb
    jobs".
    """
    show = _displayer(display)
    stats = _Stats(clock.now())
    for job in JobQuery(states or _ALL_STATES, **filters).jobs(context):
        stats.add(job)
    return stats.result(show)


def job(context, oid, database=None):
    """Return details of job identified by integer oid.

    Usage:

        asyncdb job OID [database:DATABASE_NAME]

    OID is the integer oid of a job id; the database is the connection's
    own unless named.  The answer has these keys: "repr", "args" and
    "kwargs" (reprs), "begin after", "active start", "active end",
    "initial callbacks end", "wait" (from begin after to the start, or to
    now), "active" (from the start to the end, or to now; null if not
    started), "status" (new, pending, assigned, active, callbacks or
    completed), "failed", "result" (a repr, or a brief traceback for a
    failure), "quota names", "agent", "dispatcher" (the agent's dispatcher
    UUID), "queue" and "callbacks" (ids); for a job put with a unique key,
    "unique key"; for a job with a ``retrying`` policy, "attempt" (as "2
    of 3": the attempt it is on, of how many).
    """
    return jobsummary(get_job(context, oid, database))


def traceback(context, oid, database=None, detail='default'):
    """Return the traceback for the job identified by integer oid.

    Usage:

        asyncdb traceback OID [database:DATABASE_NAME]
                          [detail:default|brief|verbose]

    detail:brief shows one line per frame; detail:verbose adds the
    (shortened) local variables of each frame.  The answer is null for a
    job that did not fail.
    """
    if detail not in _TRACEBACK_DETAILS:
        raise ValueError('detail must be one of %s, not %r'
                         % (', '.join(_TRACEBACK_DETAILS), detail))
    result = get_job(context, oid, database).result
    if not isFailure(result):
        return None
    return result.getTraceback(detail=detail)


@_with_help(_FILTER_HELP)
def nextpending(context, **filters):
    """Return details of the next job in queue to be performed.

    Usage:

        asyncdb nextpending [FILTER:VALUE...]

    The next job is the pending job with the earliest begin_after.  The
    start, end and callbacks_completed filters do not apply, since pending
    jobs have not started.  The answer is as "asyncdb job" shows it, or
    null if there is none.
    """
    for name in ('start', 'end', 'callbacks_completed'):
        if name in filters:
            raise ValueError('nextpending does not take the %r filter: '
                             'pending jobs have not started' % (name,))
    return _first(JobQuery(['pending'], **filters).jobs(context))


@_with_help(_FILTER_HELP)
def lastcompleted(context, **filters):
    """Return details of the most recently completed job.

    Usage:

        asyncdb lastcompleted [FILTER:VALUE...]

    For example, "asyncdb lastcompleted uuid:THIS" shows the last job this
    process finished.  The answer is as "asyncdb job" shows it, or null
    if there is none.
    """
    return _first(JobQuery(['completed'], **filters).jobs(context))


def UUIDs(context):
    """Return all active UUIDs.

    Usage:

        asyncdb UUIDs

    The dispatchers are those activated in the first queue.
    """
    for queue in queues(context):
        return [str(uuid) for uuid, agents in queue.dispatchers.items()
                if agents.activated]
    return []


def _agent_status(agent):
    res = {'size': agent.size, 'len': len(agent)}
    if getattr(agent, 'chooser', None) is not None:
        res['chooser'] = logs.custom_repr(agent.chooser)
    else:
        found = getattr(agent, 'filter', None)
        res['filter'] = None if found is None else logs.custom_repr(found)
    failure = claim_failure(agent)
    if failure is not None:
        res['claims fail'] = failure
    return res


def claim_failure(agent):
    """What the last claim of ``agent`` failed with (a line), or None when
    it succeeded."""
    failure = getattr(agent, 'failure', None)
    if failure is None:
        return None
    try:
        return '%s: %s' % (getattr(failure.type, '__name__', failure.type),
                           failure.getErrorMessage())
    except Exception:  # a failure stored by another version: still say so
        return logs.custom_repr(failure)


def _dispatcher_status(agents, agent_names, now):
    """The status of a dispatcher's record ``agents``; with "unloadable
    jobs" (job ids) when it found jobs it cannot load, and "degraded"
    when an agent's claims fail."""
    last = agents.last_ping.value
    res = {
        'last ping': last,
        'since ping': None if last is None else now - last,
        'dead': agents.dead,
        'ping interval': agents.ping_interval,
        'ping death interval': agents.ping_death_interval,
        'agents': {name: _agent_status(agent)
                   for name, agent in agents.items() if agent_names(name)}}
    if agents.unloadable:
        res['unloadable jobs'] = unloadable_ids(agents)
    if any(claim_failure(agent) for agent in agents.values()):
        res['degraded'] = True
    return res


def unloadable_ids(agents):
    """``[oid, database name]`` of the pending jobs that the dispatcher
    of the record ``agents`` found it cannot load."""
    return [[ZODB.utils.u64(oid), database]
            for database, oid in (agents.unloadable or ())]


def status(context, queue=None, agent=None, uuid=None):
    """Return status of the agents of all queues and all active UUIDs.

    Usage:

        asyncdb status [queue:GLOB] [agent:GLOB] [uuid:UUID]

    For each queue (named by the glob, if given): "len" (its pending jobs)
    and "dispatchers", by UUID (only the given one, if any; THIS means this
    process's): "last ping", "since ping", "dead", "ping interval", "ping
    death interval" and "agents", by name (matching the glob, if given):
    "size", "len" (jobs held) and "filter" (or "chooser").  Only when
    there is trouble: a dispatcher's "unloadable jobs" (ids of the pending
    jobs it cannot load) and "degraded" (true: claims fail), and an
    agent's "claims fail" (the error of its last claim).
    """
    uuid = None if uuid is None else parse_uuid(uuid)
    agent_names = glob_test(agent)
    now = clock.now()
    return {found.name: {
        'len': len(found),
        'dispatchers': {
            str(key): _dispatcher_status(agents, agent_names, now)
            for key, agents in found.dispatchers.items()
            if agents.activated and uuid in (None, key)}}
        for found in queues(context, queue)}


def help(context, cmd=None):
    """Get help on an asyncdb monitor tool.

    Usage:

        asyncdb help [TOOL_NAME]

    Without a tool name, list the tools.
    """
    return tool_help('asyncdb', funcs, cmd)


funcs = {'jobs': jobs, 'count': count, 'jobstats': jobstats, 'job': job,
         'traceback': traceback, 'nextpending': nextpending,
         'lastcompleted': lastcompleted, 'UUIDs': UUIDs, 'status': status,
         'help': help}


def asyncdb(connection, cmd=None, *raw):
    """Monitor and introspect zc.async activity in the database.

    To see a list of asyncdb tools, use 'asyncdb help'.

    To learn more about an asyncdb tool, use 'asyncdb help <tool name>'.

    ``asyncdb`` tools differ from ``async`` tools in that ``asyncdb`` tools
    access the database, and ``async`` tools do not.

    Usage:

        asyncdb TOOL_NAME [positional modifiers...] [name:value modifiers...]

    These tools read the database (through a connection of their own) for
    jobs of every dispatcher, and the queues, dispatchers and agents.
    """
    monitor(funcs, inspect.getdoc(asyncdb), connection, cmd, raw,
            needs_db_connection=True)
