"""Run the benchmark suite: ``python -m benchmarks.run [options]``.

Every workload (and the raw commit-rate probe) runs in a fresh child
process on a fresh storage in a temporary directory, so no workload sees
another's data, threads or caches.  The results go to a JSON file and a
table (printed, and written next to the JSON file as ``.txt``).

Options::

    --quick                 W4 with 5,000 pending jobs, short commit
                            probes, no 100,000-job memory drain
    --storage file|zeo|relstorage|all
                            which set-up(s) to run (default: all)
    --out PATH              the JSON file (default:
                            benchmarks/results/<date>-<mode>.json)
    --only w1,w2,...        run only these workloads (the raw commit
                            rate always runs)
    --batch-size N          A/B: also run W1, W2 and W4 with agents of
                            ``batch_size`` N, each right after the same
                            workload with the default 1 (table column
                            "<storage> batch N")
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import common

CASES = ('commit', 'w1', 'w2', 'w3', 'w4')
BATCHED = ('w1', 'w2', 'w4')  # the cases --batch-size runs again
STORAGES = ('file', 'zeo', 'relstorage')
PENDING_FULL, PENDING_QUICK = 100000, 5000
MEMORY_MARKS = (10000, 100000)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.run',
        description='Run the zc.async benchmark workloads W1-W4.')
    parser.add_argument('--quick', action='store_true',
                        help='a short run: W4 with 5,000 pending jobs, short'
                             ' commit probes, no memory drain')
    parser.add_argument('--storage', choices=STORAGES + ('all',),
                        default='all')
    parser.add_argument('--out', metavar='PATH')
    parser.add_argument('--only', metavar='CASES', type=_cases,
                        default=CASES,
                        help='comma-separated subset of %s (default: all);'
                             ' the raw commit rate always runs'
                             % ','.join(CASES))
    parser.add_argument('--batch-size', metavar='N', type=_batch_size,
                        default=1,
                        help='also run w1, w2 and w4 with agents of this '
                             'batch_size, each after its run with 1')
    parser.add_argument('--case', choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument('--work', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        return run_case(args.case, args.storage, args.work, args.quick,
                        args.batch_size)
    return run_all(args)


# ------------------------------------------------------------ the parent

def _cases(text):
    cases = [c.strip() for c in text.split(',') if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise argparse.ArgumentTypeError(
            'unknown case(s) %s; choose from %s'
            % (', '.join(unknown), ', '.join(CASES)))
    return tuple(c for c in CASES if c in cases or c == 'commit')


def _batch_size(text):
    size = int(text)
    if size < 1:
        raise argparse.ArgumentTypeError('batch size must be at least 1')
    return size


def run_all(args):
    from benchmarks import report
    storages = STORAGES if args.storage == 'all' else (args.storage,)
    mode = 'quick' if args.quick else 'full'
    out = args.out or os.path.join(
        common.ROOT, 'benchmarks', 'results', '%s-%s.json' % (
            datetime.date.today().isoformat(), mode))
    results = {'mode': mode, 'started': _now(), 'machine': _machine(),
               'load_average_start': os.getloadavg(), 'storages': {}}
    batch = args.batch_size
    for storage in storages:
        figures = results['storages'][storage] = {}
        batched = {}
        if batch > 1:
            results['storages']['%s batch %d' % (storage, batch)] = batched
        for case in args.only:
            figures[case] = _timed_child(case, storage, args.quick, 1)
            if batch > 1 and case in BATCHED:
                batched[case] = _timed_child(case, storage, args.quick,
                                             batch)
        batched['commit'] = figures['commit']  # the same raw rate
    results['finished'] = _now()
    # Other processes on the machine skew every figure: keep the evidence.
    results['load_average_end'] = os.getloadavg()
    report.add_ratios(results)
    table = report.table(results)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(results, f, indent=2, sort_keys=True)
    with open(os.path.splitext(out)[0] + '.txt', 'w') as f:
        f.write(table)
    print(table)
    print('results written to %s' % out)
    return 0


def _timed_child(case, storage, quick, batch):
    began = time.monotonic()
    print('%-4s %-6s %s...' % (storage, case,
                               'batch %d ' % batch if batch > 1 else ''),
          end=' ', flush=True, file=sys.stderr)
    figures = _run_child(case, storage, quick, batch)
    print('%.1f s' % (time.monotonic() - began), file=sys.stderr)
    return figures


def _run_child(case, storage, quick, batch):
    work = tempfile.mkdtemp(prefix='zc.async-bench-%s-%s-' % (storage, case))
    try:
        argv = [sys.executable, '-m', 'benchmarks.run', '--case', case,
                '--storage', storage, '--work', work,
                '--batch-size', str(batch)]
        if quick:
            argv.append('--quick')
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [common.ROOT, os.path.join(common.ROOT, 'src')]
            + [p for p in [env.get('PYTHONPATH')] if p])
        done = subprocess.run(argv, stdout=subprocess.PIPE, env=env,
                              cwd=work)
        if done.returncode:
            raise SystemExit('benchmark %s on %s failed (exit %s)'
                             % (case, storage, done.returncode))
        return json.loads(done.stdout.decode().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')


def _machine():
    return {'python': platform.python_version(), 'cpus': os.cpu_count(),
            'platform': platform.platform(),
            'ZODB': _version('ZODB'), 'ZEO': _version('ZEO'),
            'RelStorage': _version('RelStorage')}


def _version(distribution):
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------- a child

def run_case(case, storage, work, quick, batch=1):
    """Run one case in this (fresh) process; print its JSON result."""
    common.prepare_process(work)
    common.BATCH_SIZE = batch
    env = ENVIRONMENTS[storage](work)
    try:
        common.install_queue(env.db)
        result = CASE_RUNNERS[case](env, quick)
    finally:
        env.close()
    print(json.dumps(result))
    return 0


def _commit(env, quick):
    from benchmarks import commit_rate
    return commit_rate.run(env, quick)


def _w1(env, quick):
    from benchmarks import drain
    return drain.run_w1(env, quick)


def _w2(env, quick):
    from benchmarks import latency
    return latency.run(env, quick)


def _w3(env, quick):
    from benchmarks import enqueue
    return enqueue.run(env, quick)


def _w4(env, quick):
    """W3 then W1 with ``pending`` jobs already queued (put in commits of
    5000 before the clock starts); the full run then drains on to 100,000
    completed jobs, recording the dispatchers' RSS at 10,000 and
    100,000."""
    from benchmarks import drain, enqueue, jobs
    pending = PENDING_QUICK if quick else PENDING_FULL
    began = time.monotonic()
    oids = common.put_jobs(env.db, pending, jobs.noop)
    built = time.monotonic() - began
    enqueued = enqueue.run(env, quick)
    drained = drain.run_w4(env, oids, quick,
                           () if quick else MEMORY_MARKS)
    return {'pending': pending, 'build_seconds': built,
            'enqueue': enqueued, 'drain': drained}


ENVIRONMENTS = {'file': common.FileEnv, 'zeo': common.ZEOEnv,
                'relstorage': common.RelStorageEnv}
CASE_RUNNERS = {'commit': _commit, 'w1': _w1, 'w2': _w2, 'w3': _w3,
                'w4': _w4}


if __name__ == '__main__':
    sys.exit(main())
