"""W1 drain, and the drain half of W4 with the RSS of a long drain.

W1: 2000 no-op jobs are put in one commit while no dispatcher runs; then
the dispatchers (total concurrency 2) start.  The time is taken from the
jobs themselves: from the first job's ``active_start`` to the last job's
``active_end`` (so a worker process's start-up is not counted).
"""
from benchmarks import common, jobs

W1_JOBS = 2000


def run_w1(env, quick):
    oids = common.put_jobs(env.db, W1_JOBS, jobs.noop, batch=W1_JOBS)
    return _drain(env, oids)


def _drain(env, oids, after=None):
    """Start the dispatchers and wait for ``oids`` to complete.

    ``after(client, queued)``, if given, runs before the dispatchers stop
    (``queued``: the queue's length before they started); its dict is
    added to the result.
    """
    client = common.Client(env.db)
    try:
        queued = client.read(lambda: len(client.queue()))
        env.start_dispatchers()
        rows = common.wait_until_done(client, oids, 'the drain')
        extra = after(client, queued) if after is not None else {}
        env.stop_dispatchers()
    finally:
        client.close()
    span = common.active_span(rows)
    result = {'jobs': len(oids), 'seconds': span,
              'jobs_per_s': len(oids) / span,
              'ms_per_job': 1000.0 * span / len(oids)}
    result.update(extra)
    return result


def run_w4(env, pending, quick, memory_marks):
    """With ``pending`` no-op jobs already queued: time the first 2000;
    then, for each count in ``memory_marks``, drain until that many jobs
    completed and record the dispatchers' RSS."""
    first = pending[:W1_JOBS]

    def memory(client, queued):
        samples = {}
        for mark in memory_marks:
            common.wait_for(
                lambda: client.read(lambda: len(client.queue()))
                <= queued - mark,
                '%d jobs to be claimed' % mark, timeout=3600, interval=0.2)
            samples['rss_mb_at_%d' % mark] = round(env.dispatcher_rss_mb(), 1)
        return samples
    return _drain(env, first, after=memory)
