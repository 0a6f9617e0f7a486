"""Jobs, agent choosers/filters and a producer for the real-process tests.

Worker processes import this module (``--import``) so that the pickles of
these jobs resolve.  Tests coordinate with running jobs through files in a
shared directory: a job appends a line to a log file when it starts, and
waits for a "gate" file before it finishes, so a test can act while a job
is certainly running, and count every start afterwards.

Each job gets a ``BTrees.Length.Length`` "tally" and adds 1 to it in the
transaction that commits its result.  ``Length`` resolves concurrent
changes by adding them up, so a tally of 1 at the end proves the job's work
was committed exactly once, however often it was started.

Run as a program, it is a producer process::

    python -m zc.async.tests.jobs_for_processes URI DIRECTORY NAME COUNT [KEY]

(with a KEY, every put is ``put(..., unique_key=KEY)``).
"""
import json
import os
import sys
import time

#: Seconds a job or a barrier waits before giving up.
PATIENCE = 120
GATE = 'gate'
STARTS = 'starts.log'
ATTEMPTS = 'attempts.log'
CLAIMS = 'claims.log'


def append_line(path, text):
    """Append one line; O_APPEND keeps concurrent writers' lines whole."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + '\n').encode())
    finally:
        os.close(fd)


def count_lines(path):
    try:
        with open(path) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def wait_until(condition, what):
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError('gave up waiting for %s' % what)
        time.sleep(0.02)


def double(tally, n):
    """A quick job: counts its committed run and returns ``2 * n``."""
    tally.change(1)
    return 2 * n


def gated(tally, n, directory):
    """Record the start in ``starts.log``, wait for the ``gate`` file, then
    count the committed run and return ``2 * n``."""
    append_line(os.path.join(directory, STARTS), '%d %d' % (n, os.getpid()))
    gate = os.path.join(directory, GATE)
    wait_until(lambda: os.path.exists(gate), 'the gate file %s' % gate)
    tally.change(1)
    return 2 * n


def sleepy(tally, n, directory, seconds):
    """Record the start in ``starts.log``, work (in Python) for ``seconds``,
    then count the committed run and return ``2 * n``."""
    append_line(os.path.join(directory, STARTS), '%d %d' % (n, os.getpid()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    tally.change(1)
    return 2 * n


def spin(tally, n, directory):
    """Record the start in ``starts.log``, then loop in Python forever:
    only a time limit or an abort request ends it."""
    append_line(os.path.join(directory, STARTS), '%d %d' % (n, os.getpid()))
    while True:
        time.sleep(0.01)


def contended(counter, directory):
    """Increment ``counter['n']`` (a PersistentMapping, which does not
    resolve conflicts).

    Every attempt reads the counter, logs itself in ``attempts.log`` and
    waits until two attempts were logged: the first two attempts, run by
    two workers at once, both read the same value, so one of their commits
    must raise ConflictError.
    """
    value = counter['n']
    path = os.path.join(directory, ATTEMPTS)
    append_line(path, str(os.getpid()))
    wait_until(lambda: count_lines(path) >= 2, 'a second attempt')
    counter['n'] = value + 1
    return value + 1


def claim_at_barrier(directory, agent):
    """Agent chooser: claim a job, log the claim in ``claims.log``, then
    wait until two claims were logged before the poll may commit.

    Two workers polling the same queue thus both claim its first job in
    concurrent transactions, and one of the claim commits conflicts.
    """
    job = agent.queue.claim()
    if job is not None:
        path = os.path.join(directory, CLAIMS)
        append_line(path, str(os.getpid()))
        wait_until(lambda: count_lines(path) >= 2, 'a second claim')
    return job


def note_failure(tally, result):
    """A callback: counts its committed run; returns the name of the
    exception class of ``result`` (a Failure)."""
    tally.change(1)
    return type(result.value).__name__


def refuse_after(path, job):
    """Agent filter: take jobs only until the file ``path`` exists."""
    return not os.path.exists(path)


def produce(uri, directory, name, count, unique_key=None):
    """Put ``count`` :func:`double` jobs in queue ``''`` of the database at
    ``uri``, one commit each, as soon as the ``go`` file exists; return the
    job oids (the oids ``put`` returned) and the numbers of ConflictErrors
    that reached this producer: lock deadlocks of RelStorage apart."""
    os.environ['ZC_ASYNC_UUID'] = os.path.join(directory, name + '-uuid.txt')
    import BTrees.Length
    import transaction
    import ZODB.POSException
    import ZODB.utils
    from zc.asynchronous import configure, interfaces, job, worker
    configure.base()
    db = worker.open_database(uri)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    append_line(os.path.join(directory, 'ready.log'), name)
    go = os.path.join(directory, 'go')
    wait_until(lambda: os.path.exists(go), 'the go file')
    oids, conflicts, deadlocks = [], 0, 0
    for n in range(count):
        while True:
            try:
                tm.begin()
                queue = conn.root()[interfaces.KEY]['']
                put = queue.put(job.Job(double, BTrees.Length.Length(), n),
                                unique_key=unique_key)
                tm.commit()
                break
            except ZODB.POSException.ConflictError as e:
                tm.abort()
                if type(e).__name__.startswith('UnableToLock'):
                    deadlocks += 1  # RelStorage's row locks (see the test)
                else:
                    conflicts += 1
        oids.append(ZODB.utils.u64(put._p_oid))
    conn.close()
    db.close()
    return {'name': name, 'oids': oids, 'conflicts': conflicts,
            'deadlocks': deadlocks}


if __name__ == '__main__':
    # Use the importable module, so that job pickles name it, not __main__.
    from zc.asynchronous.tests import jobs_for_processes
    uri, directory, name, count, *key = sys.argv[1:]
    print(json.dumps(jobs_for_processes.produce(
        uri, directory, name, int(count), *key)))
