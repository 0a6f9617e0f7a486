"""What every workload needs: the three storage set-ups, clients, timing.

A workload runs against an *environment*:

:class:`FileEnv`
    the embedded set-up: one FileStorage opened in this process, and one
    threaded dispatcher in this process whose agent runs 2 jobs at once;
    several clients are threads with their own connections.
:class:`ZEOEnv`
    a ``runzeo`` server process on a FileStorage, and two
    ``zc.async.worker`` processes whose agents run 1 job each (total
    concurrency 2); several clients are processes.
:class:`RelStorageEnv`
    the same on a history-free RelStorage database in a private
    PostgreSQL cluster (fsync on) that the set-up starts and stops.

Each starts empty in a directory of its own.  The set-up that a workload
does outside its timed part (installing the queue, putting jobs to drain)
uses :func:`put_jobs`; the timed parts use ordinary transactions.
"""
import json
import os
import sys
import threading
import time

import transaction
import ZODB.POSException

#: How long anything waits for a condition before the benchmark fails.
PATIENCE = 600
#: Total job concurrency of the dispatchers in both set-ups.
CONCURRENCY = 2
#: The agents' ``batch_size`` (``--batch-size``; see zc.async.batches).
BATCH_SIZE = 1
#: The checkout's root: child processes must import ``benchmarks`` too.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GO = 'go'
READY = 'ready.log'


def prepare_process(directory):
    """Give this process its own instance UUID file, before zc.async's
    ``instanceuuid`` module reads ``$ZC_ASYNC_UUID`` on import."""
    os.environ['ZC_ASYNC_UUID'] = os.path.join(directory, 'uuid.txt')
    paths = [ROOT, os.path.join(ROOT, 'src')]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ['PYTHONPATH'] = os.pathsep.join(
        paths + [p for p in [os.environ.get('PYTHONPATH')] if p])


def wait_for(condition, what, timeout=PATIENCE, interval=0.02):
    """Call ``condition`` until it returns a true value; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError('benchmark gave up waiting for %s' % what)
        time.sleep(interval)


def rss_mb(pid=None):
    """Resident set size of a process (default: this one) in MiB."""
    with open('/proc/%s/status' % (pid or 'self')) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return None


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, int(round(fraction * len(sorted_values) + 0.5 - 1e-9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Client:
    """A connection with its own explicit transaction manager."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = db.open(self.tm)

    def root(self):
        return self.conn.root()

    def queue(self, name=''):
        from zc.asynchronous import interfaces
        return self.root()[interfaces.KEY][name]

    def read(self, call):
        """``call()`` in a fresh transaction that is then aborted."""
        self.tm.begin()
        try:
            return call()
        finally:
            self.tm.abort()

    def commit_with_retries(self, change):
        """Run ``change()`` and commit; on a ConflictError abort and run it
        again.  Returns ``(result, conflicts)``."""
        conflicts = 0
        while True:
            self.tm.begin()
            try:
                result = change()
                self.tm.commit()
                return result, conflicts
            except ZODB.POSException.ConflictError:
                self.tm.abort()
                conflicts += 1

    def close(self):
        self.conn.close()


def install_queue(db):
    """Install the queues mapping with queue ``''`` (as the worker's
    ``--install`` or ``configure.start`` would)."""
    from zc.asynchronous import configure, interfaces, subscribers
    configure.base()
    subscribers.QueueInstaller()(interfaces.DatabaseOpened(db))


def put_jobs(db, count, func, batch=5000):
    """Put ``count`` jobs calling ``func`` in commits of ``batch`` jobs;
    return their oids in put order."""
    from zc.asynchronous.job import Job
    client = Client(db)
    oids = []
    try:
        while len(oids) < count:
            with client.tm:
                queue = client.queue()
                jobs = [queue.put(Job(func))
                        for _ in range(min(batch, count - len(oids)))]
            oids.extend(job._p_oid for job in jobs)
            client.conn.cacheMinimize()
    finally:
        client.close()
    return oids


def load_jobs(client, oids):
    """``(active_start, active_end, status, result)`` of the jobs."""
    def read():
        rows = []
        for oid in oids:
            job = client.conn.get(oid)
            rows.append((job.active_start, job.active_end, job.status,
                         job.result))
        return rows
    return client.read(read)


def wait_until_done(client, oids, what):
    """Wait until every job in ``oids`` is completed; return
    :func:`load_jobs`' rows."""
    from zc.asynchronous import interfaces
    last = oids[-1]

    def last_done():
        return client.conn.get(last).status == interfaces.COMPLETED
    wait_for(lambda: client.read(last_done), what)
    rows = wait_for(
        lambda: [r for r in [load_jobs(client, oids)]
                 if all(row[2] == interfaces.COMPLETED for row in r)],
        what)[0]
    return rows


def active_span(rows):
    """Seconds from the first job's start to the last job's end."""
    start = min(row[0] for row in rows)
    end = max(row[1] for row in rows)
    return (end - start).total_seconds()


# ------------------------------------------------------------ environments

class FileEnv:
    """Embedded FileStorage, one threaded dispatcher in this process."""

    name = 'file'

    def __init__(self, directory):
        import ZODB
        import ZODB.FileStorage
        self.directory = directory
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(directory, 'Data.fs')))
        self.dispatcher = None

    def start_dispatchers(self, poll_interval=5):
        """Start the dispatcher (agent ``main`` of size 2); wait until it
        is active in queue ``''``."""
        from zc.asynchronous import configure, dispatcher
        configure.start(self.db, poll_interval=poll_interval,
                        agent_size=CONCURRENCY)
        self.dispatcher = dispatcher.get()
        wait_active(self.db, [self.dispatcher.UUID])
        set_batch_size(self.db, BATCH_SIZE)

    def stop_dispatchers(self):
        from zc.asynchronous.ops import cli
        if self.dispatcher is not None:
            cli.stop_dispatcher(self.dispatcher, timeout=30)
            self.dispatcher = None

    def dispatcher_rss_mb(self):
        return rss_mb()

    def run_clients(self, target, count, *args):
        """Run ``target(db, index, *args)`` in ``count`` threads started
        together; return their results."""
        results = [None] * count
        barrier = threading.Barrier(count)

        def run(index):
            results[index] = target(self.db, index, barrier.wait, *args)
        threads = [threading.Thread(target=run, args=(i,))
                   for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def close(self):
        self.stop_dispatchers()
        self.db.close()


class ProcessEnv:
    """Two worker processes (1 job each) on a database server; clients
    are processes.  Subclasses start the server and say how to reach it.
    """

    name = None

    def __init__(self, directory):
        from zc.asynchronous.tests import processes
        self.processes = processes
        self.directory = directory
        self.workers = []

    #: The database URI the worker processes get.
    uri = None

    def client_spec(self):
        """What a client process needs to open the database (JSON)."""
        raise NotImplementedError

    def start_dispatchers(self, poll_interval=5):
        """Start the two worker processes; wait until both are active in
        queue ``''`` with their agent."""
        for n in range(2):
            worker = self.processes.WorkerProcess(
                self.uri, self.directory, 'worker%d' % n,
                '--agent-size', str(CONCURRENCY // 2),
                '--poll-interval', str(poll_interval), '--install')
            # The benchmark jobs, not the tests' jobs, must resolve.
            worker.argv = _worker_argv(worker)
            self.workers.append(worker.start())
        wait_active(self.db, [w.uuid for w in self.workers],
                    check=self._check_workers)
        set_batch_size(self.db, BATCH_SIZE)

    def _check_workers(self):
        for worker in self.workers:
            if not worker.running:
                raise RuntimeError('worker %s exited:\n%s'
                                   % (worker.name, worker.log[-3000:]))

    def stop_dispatchers(self):
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def dispatcher_rss_mb(self):
        return sum(rss_mb(w.pid) for w in self.workers)

    def run_clients(self, target, count, *args):
        """Run ``target`` in ``count`` processes started together (see
        :func:`client_main`); return their results."""
        import subprocess
        go = os.path.join(self.directory, GO)
        ready = os.path.join(self.directory, READY)
        for path in (go, ready):
            if os.path.exists(path):
                os.remove(path)
        spec = json.dumps({'target': '%s:%s' % (target.__module__,
                                                 target.__name__),
                           'database': self.client_spec(),
                           'directory': self.directory, 'args': args})
        children = [subprocess.Popen(
            [sys.executable, '-m', 'benchmarks.common', spec, str(index)],
            stdout=subprocess.PIPE, env=self.processes.subprocess_env())
            for index in range(count)]
        wait_for(lambda: _count_lines(ready) >= count, 'clients to connect')
        open(go, 'w').close()
        results = []
        for child in children:
            out, _ = child.communicate(timeout=PATIENCE)
            if child.returncode:
                raise RuntimeError('a client process failed')
            results.append(json.loads(out.decode().splitlines()[-1]))
        return results

    def close(self):
        try:
            self.stop_dispatchers()
            self.db.close()
        finally:
            self.server.stop()


class ZEOEnv(ProcessEnv):
    """A ``runzeo`` server and two worker processes (1 job each)."""

    name = 'zeo'

    def __init__(self, directory):
        super().__init__(directory)
        self.server = self.processes.ZEOServer(directory)
        self.server.start()
        self.uri = self.server.uri
        self.db = self.server.open_db()

    def client_spec(self):
        return {'zeo': list(self.server.address)}


class RelStorageEnv(ProcessEnv):
    """A private PostgreSQL cluster (fsync on) on a free loopback port, a
    history-free RelStorage database in it, and two worker processes (1
    job each)."""

    name = 'relstorage'
    dbname = 'zc_async_bench'

    def __init__(self, directory):
        super().__init__(directory)
        unavailable = self.processes.PostgreSQLServer.available()
        if unavailable:
            raise SystemExit('cannot run the relstorage set-up: %s'
                             % unavailable)
        self.server = self.processes.PostgreSQLServer(directory, durable=True)
        self.server.start()
        self.server.fresh_database(self.dbname)
        self.uri = self.server.uri(self.dbname) + '?keep_history=false'
        self.db = open_uri(self.uri)
        #: psycopg2 connection arguments of the same database.
        self.sql_dsn = self.server.dsn(self.dbname)

    def client_spec(self):
        return {'uri': self.uri}


def open_uri(uri):
    """A ZODB database for a zodburi URI."""
    import zodburi
    import ZODB
    factory, dbkw = zodburi.resolve_uri(uri)
    return ZODB.DB(factory(), **dbkw)


def _worker_argv(worker):
    argv = worker.argv()
    index = argv.index('--import')
    argv[index + 1] = 'benchmarks.jobs'
    return lambda: argv


def wait_active(db, uuids, check=None):
    """Wait until each dispatcher in ``uuids`` is active in queue ``''``
    with an agent."""
    from zc.asynchronous import interfaces
    client = Client(db)

    def active():
        if check is not None:
            check()
        queues = client.root().get(interfaces.KEY)
        if queues is None or '' not in queues:
            return False
        records = queues[''].dispatchers
        return all(uuid in records and records[uuid].activated
                   and len(records[uuid]) for uuid in uuids)
    try:
        wait_for(lambda: client.read(active), 'dispatchers to activate',
                 interval=0.05)
    finally:
        client.close()


def set_batch_size(db, size):
    """Give every agent of queue ``''`` the ``batch_size`` ``size`` (its
    dispatchers' worker threads take it from their next job on)."""
    if size == 1:
        return  # the default: leave the database as the dispatchers made it
    client = Client(db)
    try:
        def change():
            for agents in client.queue().dispatchers.values():
                for agent in agents.values():
                    agent.batch_size = size
        client.commit_with_retries(change)
    finally:
        client.close()


def _count_lines(path):
    try:
        with open(path) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def client_main(spec, index):
    """A client process of :meth:`ZEOEnv.run_clients`: connect, report
    ready, wait for the go file, run the target, print its JSON result."""
    import importlib
    import ZEO
    spec = json.loads(spec)
    directory = spec['directory']
    os.environ['ZC_ASYNC_UUID'] = os.path.join(
        directory, 'client%d-uuid.txt' % index)
    module, name = spec['target'].split(':')
    target = getattr(importlib.import_module(module), name)
    from zc.asynchronous import configure
    configure.base()
    database = spec['database']
    if 'zeo' in database:
        db = ZEO.DB(tuple(database['zeo']), wait_timeout=60)
    else:
        db = open_uri(database['uri'])
    go = os.path.join(directory, GO)

    def barrier():
        with open(os.path.join(directory, READY), 'a') as f:
            f.write('%d\n' % index)
        wait_for(lambda: os.path.exists(go), 'the go file', interval=0.001)
    try:
        result = target(db, index, barrier, *spec['args'])
    finally:
        db.close()
    print(json.dumps(result))


if __name__ == '__main__':
    client_main(sys.argv[1], int(sys.argv[2]))
