"""W2 latency: from the producer's commit to the job's start.

The dispatchers run and are idle.  200 jobs are put one at a time, each in
its own commit, 20 ms apart.  The producer notes ``time.time()`` right
after each commit returns; the job (:func:`benchmarks.jobs.started`)
returns ``time.time()`` at its start.  Both clocks are this machine's.
Five unmeasured jobs run first, so the first measured one finds warm
connections.
"""
import time

from benchmarks import common, jobs

JOBS = 200
SPACING = 0.020
WARM_UP = 5


def run(env, quick):
    from zc.asynchronous.job import Job
    env.start_dispatchers()
    client = common.Client(env.db)
    try:
        for _ in range(WARM_UP):
            job, _ = client.commit_with_retries(
                lambda: client.queue().put(Job(jobs.started)))
            common.wait_until_done(client, [job._p_oid], 'a warm-up job')
        puts, conflicts = [], 0
        start = time.monotonic()
        for n in range(JOBS):
            time.sleep(max(0, start + n * SPACING - time.monotonic()))
            job, retried = client.commit_with_retries(
                lambda: client.queue().put(Job(jobs.started)))
            puts.append((job._p_oid, time.time()))
            conflicts += retried
        rows = common.wait_until_done(
            client, [oid for oid, _ in puts], 'the latency jobs')
    finally:
        client.close()
        env.stop_dispatchers()
    latencies = sorted(1000.0 * (row[3] - committed)
                       for row, (_, committed) in zip(rows, puts))
    return {'jobs': JOBS, 'producer_conflicts': conflicts,
            'p50_ms': common.percentile(latencies, 0.50),
            'p90_ms': common.percentile(latencies, 0.90),
            'p99_ms': common.percentile(latencies, 0.99),
            'max_ms': latencies[-1], 'min_ms': latencies[0]}
