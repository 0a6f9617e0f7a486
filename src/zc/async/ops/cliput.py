"""The ``zc-async put`` command: enqueue a job from the command line.

::

    zc-async put DATABASE dotted.name [ARGS...] [--kwargs JSON]
                 [--queue NAME] [--begin-after ISO|+SECONDS]
                 [--unique-key KEY]

imports the callable by its dotted name (``package.module.function``, or
``package.module:Class.method``), checks that it can be stored by
reference and takes the arguments, puts a job calling it in the queue,
commits, and prints the job's oid (what ``zc-async job`` takes).  With a
``--unique-key`` held by a pending or running job, it puts nothing and
prints that job's oid instead.

Each positional ARG is one JSON value: ``42``, ``3.5``, ``true``, ``null``,
``'"text"'``, ``'[1, 2]'``, ``'{"a": 1}'``; so a string needs its JSON
quotes (and the shell's around them).  ``--kwargs`` is a JSON object.
``--begin-after`` is a timezone-aware ISO 8601 time or ``+SECONDS`` from
now.  Bad input prints one line on stderr, exits with status 2 and commits
nothing.

:func:`add_put_parser` plugs the command into the ``zc-async`` parser.
"""
import datetime
import inspect
import json
import math
import pickle
import pkgutil

import ZODB.utils

from . import clidb
from .. import interfaces
from .. import job as job_module
from .. import clock
from .. import logs
from .. import monitor


def add_put_parser(subparsers):
    """Register the ``put`` subcommand."""
    put = subparsers.add_parser(
        'put', help='put a job in a queue',
        description='Put a job calling an importable function in a queue, '
                    "commit, and print the job's oid.  Positional ARGS and "
                    'the --kwargs values are JSON.')
    clidb._add_common(put)
    put.add_argument('callable', metavar='dotted.name',
                     help='the callable, as package.module.name or '
                          'package.module:name')
    put.add_argument('args', nargs='*', metavar='ARG',
                     help='a positional argument, as a JSON value '
                          '(strings need their quotes: \'"text"\')')
    put.add_argument('--kwargs', metavar='JSON', default='{}',
                     help='keyword arguments, as a JSON object')
    put.add_argument('--queue', metavar='NAME', default='',
                     help='the queue (default: the default queue, "")')
    put.add_argument('--begin-after', metavar='ISO|+SECONDS',
                     help='do not start before this timezone-aware ISO 8601 '
                          'time, or this many seconds from now')
    put.add_argument('--unique-key', metavar='KEY',
                     help='put nothing if a job with this key is pending or '
                          'running in the queue (its oid is printed)')
    put.set_defaults(run=clidb._runner('put', run_put, writes=True))


def run_put(options, conn):
    """``zc-async put``: put the job in ``conn``'s database; the answer.

    ValueError, before anything is changed, for bad input.
    """
    call = resolve(options.callable)
    args = [parse_json(text, 'argument %d' % (ix + 1))
            for ix, text in enumerate(options.args)]
    kwargs = parse_json(options.kwargs, '--kwargs')
    if not isinstance(kwargs, dict):
        raise ValueError('--kwargs must be a JSON object, not %s'
                         % (options.kwargs,))
    _check_signature(call, options.callable, args, kwargs)
    begin_after = (None if options.begin_after is None
                   else parse_begin_after(options.begin_after))
    queue = find_queue(conn, options.queue)
    new = job_module.Job(call, *args, **kwargs)
    try:
        job = queue.put(new, begin_after=begin_after,
                        unique_key=options.unique_key)
    except TypeError as e:  # say, an empty unique key
        raise ValueError(str(e)) from None
    oid = ZODB.utils.u64(job._p_oid)
    if options.json:
        return monitor.encoder.encode({
            'oid': oid, 'database': conn.db().database_name,
            'new': job is new})
    return str(oid)


def resolve(name):
    """The callable named ``name``; ValueError unless it is importable,
    callable and pickled by reference (as a job stores it)."""
    try:
        found = pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError('cannot import %r: %s' % (name, e)) from None
    if not callable(found):
        raise ValueError('%r is not callable: %s' % (
            name, logs.custom_repr(found)))
    try:
        same = pickle.loads(pickle.dumps(found)) == found
    except Exception:  # pickling fails in many ways
        same = False
    if not same:
        raise ValueError('%r cannot be stored in a job: it does not pickle '
                         'by reference (name a function or class defined at '
                         'the top level of its module)' % (name,))
    return found


def parse_json(text, what):
    """The JSON value ``text`` of ``what``; ValueError if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(
            '%s is not JSON: %s (a string needs JSON quotes, as in '
            '\'"text"\')' % (what, text)) from None


def _check_signature(call, name, args, kwargs):
    try:
        signature = inspect.signature(call)
    except (TypeError, ValueError):  # some builtins have none: not checked
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError('the arguments do not fit %s%s: %s'
                         % (name, signature, e)) from None


def parse_begin_after(text):
    """``--begin-after``: ``+SECONDS`` from now, or an aware ISO time."""
    if text.startswith('+'):
        try:
            seconds = float(text[1:])
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError('--begin-after +SECONDS needs a number of '
                             'seconds, not %s' % (text,))
        return clock.now() + datetime.timedelta(seconds=seconds)
    iso = text[:-1] + '+00:00' if text.endswith(('Z', 'z')) else text
    try:
        when = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError('--begin-after must be an ISO 8601 time or '
                         '+SECONDS, not %s' % (text,)) from None
    if when.tzinfo is None:
        raise ValueError('--begin-after needs a timezone, as in %s+00:00 or '
                         '%sZ' % (text, text))
    return when


def find_queue(conn, name):
    """The queue ``name`` of ``conn``'s database; ValueError if none."""
    queues = conn.root().get(interfaces.KEY)
    if queues is None:
        raise ValueError('no zc.async queues in database %r (a worker '
                         'installs them when it starts)'
                         % (conn.db().database_name,))
    if name not in queues:
        raise ValueError('no queue named %r; the queues are: %s' % (
            name, ', '.join(repr(key) for key in queues.keys())))
    return queues[name]
