"""The ``async`` monitor command: this process's dispatcher, from memory.

A monitor command is a plain function ``command(connection, cmd=None,
*raw)``: ``connection`` is anything with a ``write(text)`` method, ``cmd``
names one of the command's tools and ``raw`` holds the words that follow.
:func:`monitor` runs the tool and writes its answer: strings as they are,
anything else as pretty JSON (:data:`encoder`).  The line server of
:mod:`zc.async.ops.monitorserver` serves these commands; they also work from
Python, as in 1.5 (where ``zc.monitor`` served them).

``async`` is a keyword, so the command function is :func:`async_`; its
``__name__`` is ``'async'`` and ``getattr(module, 'async')`` finds it.

The tools read the dispatcher's memory (polls, job records, thread pools),
so call them in the dispatcher's reactor thread.  They report on the
dispatcher that :func:`get_dispatcher` finds: the one named by a ``uuid``
modifier, else the one the caller chose with :func:`using_dispatcher`,
else the one of this process's instance UUID.
"""
import collections.abc
import contextlib
import contextvars
import datetime
import inspect
import json
import re
import uuid as uuid_module

import zope.component

from . import dispatcher as dispatcher_module
from . import clock
from . import interfaces
from . import logs
from . import tolerant

# ------------------------------------------------------------- encoding


def _encode_timedelta(delta):
    """The non-zero days, hours, minutes and (float) seconds of ``delta``."""
    hours, rest = divmod(delta.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = {'days': delta.days, 'hours': hours, 'minutes': minutes,
             'seconds': seconds + delta.microseconds / 1000000}
    res = {name: value for name, value in parts.items() if value}
    if 'seconds' in res:
        res['seconds'] = float(res['seconds'])
    return res or {'seconds': 0.0}


def _encode_datetime(value):
    """ISO-8601 in UTC with a ``Z``; naive values are taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value.isoformat() + 'Z'


class Encoder(json.JSONEncoder):
    """JSON for monitor answers.

    Timedeltas become ``{"days", "hours", "minutes", "seconds"}`` (only the
    non-zero ones; ``{"seconds": 0.0}`` for none), datetimes UTC ISO-8601
    strings ending in ``Z``, UUIDs strings, stored jobs ``[oid, "database
    name"]``, iterators lists, and anything else JSON lacks (functions,
    persistent objects, failures ...) its :func:`zc.async.logs.custom_repr`.
    """

    def default(self, obj):
        if isinstance(obj, datetime.timedelta):
            return _encode_timedelta(obj)
        if isinstance(obj, datetime.datetime):
            return _encode_datetime(obj)
        if isinstance(obj, uuid_module.UUID):
            return str(obj)
        if (interfaces.IJob.providedBy(obj) and obj._p_oid is not None
                and obj._p_jar is not None):
            return dispatcher_module.getId(obj)
        if isinstance(obj, collections.abc.Iterator):
            return list(obj)
        return logs.custom_repr(obj)


encoder = Encoder(sort_keys=True, indent=4)

# ----------------------------------------------------- modifier parsing


def parse_modifiers(raw):
    """Split command words into positional and ``name:value`` modifiers.

    Returns ``(args, kwargs)``.  Positional modifiers must come first, and
    a name may be given once.
    """
    args, kwargs = [], {}
    for word in raw:
        name, colon, value = word.partition(':')
        if not colon:
            if kwargs:
                raise ValueError(
                    'placeful modifiers must come before named modifiers')
            args.append(word)
        elif name in kwargs:
            raise ValueError('modifier %r given twice' % (name,))
        else:
            kwargs[name] = value
    return args, kwargs


_INTERVAL = re.compile(
    r'(?:(\d+)D)?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?$', re.IGNORECASE)


def parse_interval(text):
    """The timedelta of an interval written ``[nD][nH][nM][nS]``.

    Letters may be lower case; seconds may have decimals (``1D12H``,
    ``5m``, ``1.5S``).
    """
    match = _INTERVAL.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError('%r is not an interval like 1D2H3M4.5S (days, '
                         'hours, minutes, seconds; each optional)' % (text,))
    days, hours, minutes, seconds = (
        float(group) if group else 0 for group in match.groups())
    return datetime.timedelta(days=days, hours=hours, minutes=minutes,
                              seconds=seconds)


def _dt(value):
    """A time modifier: None, a poll key (an integer), or a datetime.

    Anything else is an interval (see :func:`parse_interval`) meaning
    "that long ago".
    """
    if value is None or isinstance(value, (int, datetime.datetime)):
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return clock.now() - parse_interval(value)
    except ValueError:
        raise ValueError('%r is neither a poll key (an integer) nor an '
                         'interval like 1D2H3M4.5S' % (value,)) from None


def parse_int(value, name, minimum=0):
    """``value`` as an integer of at least ``minimum`` (``name`` in errors).
    """
    try:
        res = int(value)
    except (TypeError, ValueError):
        raise ValueError('%s must be an integer, not %r' % (name, value)
                         ) from None
    if res < minimum:
        raise ValueError('%s must be at least %d, not %d'
                         % (name, minimum, res))
    return res


# ----------------------------------------------------- which dispatcher

_current = contextvars.ContextVar('zc.async monitor dispatcher',
                                  default=None)


@contextlib.contextmanager
def using_dispatcher(dispatcher):
    """Make ``dispatcher`` the default of the tools, in this context."""
    token = _current.set(dispatcher)
    try:
        yield dispatcher
    finally:
        _current.reset(token)


def this_uuid():
    """The UUID that ``THIS`` means: the default dispatcher's, else the
    instance UUID."""
    chosen = _current.get()
    if chosen is not None:
        return chosen.UUID
    res = zope.component.queryUtility(interfaces.IUUID)
    if res is None:
        raise ValueError('THIS means the UUID of this process, but none is '
                         'registered')
    return res


def parse_uuid(text):
    """The UUID written ``text``; ``THIS`` is :func:`this_uuid`."""
    if isinstance(text, uuid_module.UUID):
        return text
    if text.upper() == 'THIS':
        return this_uuid()
    try:
        return uuid_module.UUID(text)
    except ValueError:
        raise ValueError('%r is not a UUID (nor THIS)' % (text,)) from None


def get_dispatcher(uuid=None):
    """The dispatcher of ``uuid`` (a UUID or its text) in this process.

    Without ``uuid``: the dispatcher chosen with :func:`using_dispatcher`,
    else the one of the instance UUID.  ValueError if there is none.
    """
    if uuid is None:
        res = _current.get()
        if res is None:
            res = dispatcher_module.get()
        if res is None:
            raise ValueError('no dispatcher is registered in this process')
        return res
    res = dispatcher_module.get(parse_uuid(uuid))
    if res is None:
        raise ValueError('no dispatcher with UUID %s in this process'
                         % (uuid,))
    return res


# ------------------------------------------------------ running a tool


def monitor(funcs, help_text, connection, cmd, raw,
            needs_db_connection=False):
    """Run tool ``cmd`` of ``funcs`` with the modifiers in ``raw``; write
    its answer and a newline to ``connection``.

    No ``cmd``: write ``help_text``.  An unknown ``cmd`` is reported in the
    output.  ``needs_db_connection``: the tool gets a fresh connection to
    the default dispatcher's database as its first argument.
    """
    if cmd is None:
        res = help_text
    elif cmd not in funcs:
        res = '[Unknown tool name for this command: %s]' % (cmd,)
    else:
        args, kwargs = parse_modifiers(raw)
        if needs_db_connection and cmd == 'help':  # help needs no database
            res = _encode(_call(cmd, funcs[cmd], [None] + args, kwargs))
        elif needs_db_connection:
            res = _call_with_connection(cmd, funcs[cmd], args, kwargs)
        else:
            res = _encode(_call(cmd, funcs[cmd], args, kwargs))
    connection.write(res)
    connection.write('\n')


def _call(name, func, args, kwargs):
    """``func(*args, **kwargs)``; ValueError naming the tool if the
    modifiers do not fit its signature."""
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError('wrong modifiers for tool %r: %s' % (name, e)
                         ) from None
    return func(*args, **kwargs)


def _call_with_connection(name, func, args, kwargs):
    """Call (and encode, while the objects are readable) with a private
    tolerant connection to the default dispatcher's database (jobs whose
    code this process lacks are shown too: see :mod:`zc.async.tolerant`);
    a monitor never changes data."""
    with tolerant.connection(get_dispatcher().db) as conn:
        return _encode(_call(name, func, [conn] + args, kwargs))


def _encode(res):
    return res if isinstance(res, str) else encoder.encode(res)


def tool_help(command, funcs, cmd):
    """The help tool shared by the commands: the list of tools, or the
    docstring of ``cmd``."""
    if cmd is None:
        lines = ['These are the tools available.  Usage for each tool is',
                 "'%s <tool name> [modifiers...]'.  Learn more about each"
                 % (command,),
                 "tool using '%s help <tool name>'." % (command,), '']
        for name, func in sorted(funcs.items()):
            summary = inspect.getdoc(func).split('\n')[0]
            lines.append('%s: %s' % (name, summary))
        return '\n'.join(lines)
    if cmd not in funcs:
        return 'Unknown %s tool' % (command,)
    return inspect.getdoc(funcs[cmd])


# ---------------------------------------------------------------- tools


def status(uuid=None):
    """Get a mapping of general zc.async dispatcher information.

    Usage:

        async status [uuid:UUID]

    The answer has these keys:

    - "status": STARTING (activated, no poll yet), RUNNING (polling on
      time), DEGRADED (polling on time, but the last poll's claims
      failed), STUCK (the last poll, or the first, is overdue) or STOPPED
      (not activated);
    - "poll interval": the time between polls;
    - "time since last poll": how long ago the last poll was (null before
      the first);
    - "uptime": time since activation (null when stopped);
    - "uuid": the dispatcher's UUID;
    - "unloadable jobs", only when this process found pending jobs that
      it cannot load: their ids (see "asyncdb job").

    The uuid modifier chooses another dispatcher of this process.
    """
    return dispatcher_status(get_dispatcher(uuid))


def dispatcher_status(dispatcher):
    """``dispatcher.getStatusInfo()``, with the ids of the "unloadable
    jobs" it found, if any."""
    res = dispatcher.getStatusInfo()
    found = dispatcher.unloadable.entries()
    if found:
        res['unloadable jobs'] = [[entry.oid, entry.database]
                                  for entry in found]
    return res


def jobs(queue=None, agent=None, uuid=None):
    """Show active jobs in worker threads as of the instant.

    Usage:

        async jobs [queue:QUEUE_NAME] [agent:AGENT_NAME] [uuid:UUID]

    The answer is a list of job ids, each [oid, "database name"]; use
    "async job OID" for details.  The queue and agent modifiers limit the
    list to the threads of that queue and agent name (the default queue is
    named "").  These jobs are what the threads hold now, which may be
    newer than what the database says.
    """
    return get_dispatcher(uuid).getActiveJobIds(queue, agent)


def job(OID, database=None, uuid=None):
    """Local information about a job as of last poll, if known.

    Usage:

        async job OID [database:DATABASE_NAME] [uuid:UUID]

    OID is the integer oid of a job id (see "async jobs" and "async
    poll").  Give the database name when jobs of several databases share
    the oid.  The answer has these keys:

    - "call": the job's repr;
    - "queue", "agent": where the job was claimed;
    - "poll id": the key of the poll that claimed it;
    - "quota names": the job's quota names;
    - "thread": the id of the thread that ran it;
    - "started", "completed": when this process started and finished it
      (null until then);
    - "failed": whether the result is a failure;
    - "result": the repr of the result, or the traceback of a failure;
    - "reassigned": whether the job was taken away from this process.

    Only recent jobs are remembered (200 by default).
    """
    dispatcher = get_dispatcher(uuid)
    oid = parse_int(OID, 'OID')
    try:
        return dispatcher.getJobInfo(oid, database)
    except KeyError:
        raise ValueError('this dispatcher has no record of job oid %d in '
                         'database %r' % (oid, database)) from None


def jobstats(at=None, before=None, since=None, queue=None, agent=None,
             uuid=None):
    """Statistics on historical jobs as of last poll.

    Usage:

        async jobstats [at:TIME|before:TIME] [since:TIME]
                       [queue:QUEUE_NAME] [agent:AGENT_NAME] [uuid:UUID]

    TIME is a poll key (an integer, see "async poll") or an interval such
    as 1D2H3M4S (days, hours, minutes, seconds; each optional) meaning
    that long ago.  By default all remembered polls count; "at" and
    "before" choose the newest poll to count (at most one of them),
    "since" the oldest.  The answer has these keys:

    - "started", "successful", "failed", "unknown": job counts ("unknown":
      no longer remembered);
    - "shortest successful", "longest successful", "shortest failed",
      "longest failed", "shortest active", "longest active": job ids (or
      null), "active" being the jobs still running;
    - "statistics start", "statistics end": the time of the oldest and of
      the newest poll counted.
    """
    return get_dispatcher(uuid).getStatistics(
        at=_dt(at), before=_dt(before), since=_dt(since), queue=queue,
        agent=agent)


def _poll_answer(info):
    return {'key': info.key, 'time': info.utc_timestamp, 'results': info}


def poll(at=None, before=None, uuid=None):
    """Get information about a single poll, defaulting to most recent.

    Usage:

        async poll [at:TIME|before:TIME] [uuid:UUID]

    TIME is a poll key (an integer) or an interval such as 1D2H3M4S
    meaning that long ago: "at" shows the poll made then (or the last one
    before), "before" the poll made strictly before.  The answer has:

    - "key": the poll key;
    - "time": when the poll was made;
    - "results": for each queue name, null (the dispatcher is not
      activated there) or, for each agent name, the agent's "size", "len"
      (jobs it held), "error" (null or the failure of its claim), "new
      jobs" (job ids claimed by this poll) and "active jobs" (job ids held
      when the poll began).

    The answer is null when no such poll is remembered.
    """
    info = get_dispatcher(uuid).getPollInfo(at=_dt(at), before=_dt(before))
    return None if info is None else _poll_answer(info)


def polls(at=None, before=None, since=None, count=None, uuid=None):
    """Get information about recent polls, defaulting to most recent.

    Usage:

        async polls [at:TIME|before:TIME] [since:TIME] [count:N] [uuid:UUID]

    TIME is a poll key (an integer) or an interval such as 1D2H3M4S
    meaning that long ago.  "at" or "before" choose the newest poll shown,
    "since" the oldest, and count:N the most shown.  Without "since" or
    "count", the three newest polls are shown.  Each poll is shown as "async
    poll" shows it.
    """
    if count is not None:
        count = parse_int(count, 'count')
    elif since is None:
        count = 3
    return [_poll_answer(info) for info in get_dispatcher(uuid).iterPolls(
        at=_dt(at), before=_dt(before), since=_dt(since), count=count)]


def utcnow():
    """Return the current time in UTC, in ISO 8601 format.

    Usage:

        async utcnow

    Compare it with the times of other answers (all UTC).  The answer is
    the bare time, not a JSON string, as in 1.5.
    """
    return _encode_datetime(clock.now())


def UUID():
    """Get instance UUID in hex.

    Usage:

        async UUID

    This is the instance UUID, stored in the file named by the
    ZC_ASYNC_UUID environment variable (uuid.txt in the working directory
    by default).
    """
    return str(this_uuid())


def help(cmd=None):
    """Get help on an async monitor tool.

    Usage:

        async help [TOOL_NAME]

    Without a tool name, list the tools.
    """
    return tool_help('async', funcs, cmd)


funcs = {'status': status, 'jobs': jobs, 'job': job, 'jobstats': jobstats,
         'poll': poll, 'polls': polls, 'utcnow': utcnow, 'UUID': UUID,
         'help': help}


def async_(connection, cmd=None, *raw):
    """Monitor zc.async activity in this process.

    To see a list of async tools, use 'async help'.

    To learn more about an async monitor tool, use 'async help <tool name>'.

    Usage:

        async TOOL_NAME [positional modifiers...] [name:value modifiers...]

    These tools read what the dispatcher of this process remembers (its
    status, polls, threads and recent jobs), not the database; see the
    asyncdb command for the database.
    """
    monitor(funcs, inspect.getdoc(async_), connection, cmd, raw)


async_.__name__ = 'async'  # the command's name (``async`` is a keyword)
globals()['async'] = async_
