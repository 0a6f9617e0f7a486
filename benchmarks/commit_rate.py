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


def sql_commit_rate(dsn, seconds):
    """Commits per second of one plain psycopg2 client that inserts one
    small row per transaction: what the PostgreSQL server itself gives
    (for RelStorage, which makes several round trips per commit)."""
    import psycopg2
    conn = psycopg2.connect(**dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute('CREATE TABLE commit_probe (n integer)')
            conn.commit()
            commits = 0
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                cursor.execute('INSERT INTO commit_probe VALUES (%s)',
                               (commits,))
                conn.commit()
                commits += 1
            span = time.monotonic() - start
            cursor.execute('DROP TABLE commit_probe')
            conn.commit()
    finally:
        conn.close()
    return {'commits': commits, 'seconds': span,
            'commits_per_s': commits / span}


def run(env, quick):
    """The raw commit rate with one client and with four (and, on
    PostgreSQL, a plain SQL client's)."""
    seconds = 1.0 if quick else 3.0
    result = {'one_client': measure(env, 1, seconds),
              'four_clients': measure(env, 4, seconds)}
    dsn = getattr(env, 'sql_dsn', None)
    if dsn is not None:
        result['sql_one_client'] = sql_commit_rate(dsn, seconds)
    return result
