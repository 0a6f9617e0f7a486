"""The raw commit rate of a storage: the yardstick of every workload.

Each client has its own small persistent object (no conflicts between
clients) and, for ``seconds``, changes it and commits, one change per
transaction.  The rate is all clients' commits divided by the time from
the common start to the last client's end.
"""
import time

import persistent


class Counter(persistent.Persistent):
    """The small persistent object a probe client changes."""

    n = 0


def probe_client(db, index, barrier, seconds):
    """Commit one small change per transaction for ``seconds``."""
    from benchmarks.common import Client
    client = Client(db)
    key = 'commit-probe-%d' % index
    counter = client.read(lambda: client.root()[key])
    barrier()
    start = time.time()
    deadline = time.monotonic() + seconds
    commits = 0
    while time.monotonic() < deadline:
        client.tm.begin()
        counter.n += 1
        client.tm.commit()
        commits += 1
    end = time.time()
    client.close()
    return {'start': start, 'end': end, 'commits': commits}


def measure(env, clients, seconds):
    """Commits per second with ``clients`` concurrent clients."""
    from benchmarks.common import Client
    setup = Client(env.db)
    with setup.tm:
        for index in range(clients):
            setup.root()['commit-probe-%d' % index] = Counter()
    setup.close()
    results = env.run_clients(probe_client, clients, seconds)
    span = max(r['end'] for r in results) - min(r['start'] for r in results)
    commits = sum(r['commits'] for r in results)
    return {'clients': clients, 'commits': commits, 'seconds': span,
            'commits_per_s': commits / span}


def run(env, quick):
    """The raw commit rate with one client and with four."""
    seconds = 1.0 if quick else 3.0
    return {'one_client': measure(env, 1, seconds),
            'four_clients': measure(env, 4, seconds)}
