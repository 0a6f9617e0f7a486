"""W3 enqueue, and the enqueue half of W4.

Four producers (threads with their own connections on the embedded
FileStorage, processes on ZEO) each put 500 no-op jobs, one commit each,
as fast as they can, while no dispatcher runs.  A ConflictError that a
commit raises reaches the producer, which aborts and puts the job again:
both the count of such errors and of the retries are reported.
"""
import time

from benchmarks import common, jobs

PRODUCERS = 4
JOBS_EACH = 500


def producer(db, index, barrier, count):
    """Put ``count`` jobs, one commit each; report times and conflicts."""
    from zc.asynchronous.job import Job
    client = common.Client(db)
    client.read(client.queue)  # load the queue before the clock starts
    barrier()
    start = time.time()
    conflicts = retries = 0
    for _ in range(count):
        _, failed = client.commit_with_retries(
            lambda: client.queue().put(Job(jobs.noop)))
        conflicts += failed
        retries += failed
    end = time.time()
    client.close()
    return {'start': start, 'end': end, 'puts': count,
            'conflicts': conflicts, 'retries': retries}


def run(env, quick):
    results = env.run_clients(producer, PRODUCERS, JOBS_EACH)
    span = max(r['end'] for r in results) - min(r['start'] for r in results)
    puts = sum(r['puts'] for r in results)
    return {'producers': PRODUCERS, 'jobs': puts, 'seconds': span,
            'jobs_per_s': puts / span,
            'ms_per_job': 1000.0 * span / puts,
            'conflicts': sum(r['conflicts'] for r in results),
            'retries': sum(r['retries'] for r in results)}
