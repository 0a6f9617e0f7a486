"""Tests of the zc-async command (zc.async.ops.cli) and its demo work."""
import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import ZODB.FileStorage

import zc.asynchronous.ops.cli as cli
import zc.asynchronous.demo as demo
import zc.asynchronous.instanceuuid as instanceuuid

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# Generous bound for a real process on a loaded 2-core machine.
DEADLINE = 120


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ParserTests(unittest.TestCase):

    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(list(argv))
            except SystemExit as exit:
                status = exit.code
        return status, out.getvalue(), err.getvalue()

    def test_help_lists_the_demo(self):
        status, out, err = self.run_main('--help')
        self.assertEqual(status, 0)
        self.assertIn('demo', out)
        self.assertIn('zc-async', out)

    def test_a_command_is_required(self):
        status, out, err = self.run_main()
        self.assertEqual(status, 2)
        self.assertIn('required', err)

    def test_demo_options_and_defaults(self):
        args = cli.build_parser().parse_args(['demo'])
        self.assertEqual((args.var, args.samples, args.jobs, args.timeout),
                         ('var', 4000000, 4, 600))
        args = cli.build_parser().parse_args(
            ['demo', '--var', 'x', '--samples', '10', '--jobs', '2'])
        self.assertEqual((args.var, args.samples, args.jobs), ('x', 10, 2))

    def test_counts_must_be_positive(self):
        for option in ('--jobs', '--samples'):
            for value in ('0', '-3', 'many'):
                status, out, err = self.run_main('demo', option, value)
                self.assertEqual(status, 2)
                self.assertIn('expected a positive integer, got %r' % value,
                              err)

    def test_fewer_samples_than_jobs_is_refused_before_any_work(self):
        tmpdir = tempfile.mkdtemp(prefix='zc.async-cli-')
        self.addCleanup(shutil.rmtree, tmpdir, True)
        var = os.path.join(tmpdir, 'var')
        status, out, err = self.run_main(
            'demo', '--var', var, '--samples', '3', '--jobs', '4')
        self.assertEqual(status, 2)
        self.assertIn('--samples (3) must be at least --jobs (4)', err)
        self.assertFalse(os.path.exists(var))


class DemoJobTests(unittest.TestCase):

    def test_generate_sample_outside_a_dispatcher(self):
        count, size = demo.generate_sample(1000)
        self.assertEqual(size, 1000)
        self.assertTrue(700 < count < 870, count)  # pi/4 = 0.785...

    def test_split_spreads_the_remainder(self):
        self.assertEqual(demo.split(10, 4), [3, 3, 2, 2])
        self.assertEqual(demo.split(8, 4), [2, 2, 2, 2])
        with self.assertRaises(ValueError):
            demo.split(3, 4)
        with self.assertRaises(ValueError):
            demo.split(3, 0)

    def test_estimate_pi_is_a_parallel_job_of_sample_jobs(self):
        job = demo.estimate_pi(samples=10, jobs=3)
        self.assertEqual([j.callable for j in job.args],
                         [demo.generate_sample] * 3)
        self.assertEqual([tuple(j.args) for j in job.args], [(4,), (3,), (3,)])
        self.assertEqual(job.kwargs['postprocess'].callable,
                         demo.process_samples)


class DemoProcessTests(unittest.TestCase):
    """``python -m zc.async.ops.cli demo`` as a real process in a temp dir."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-cli-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        self.env = dict(os.environ)
        self.env['PYTHONPATH'] = os.pathsep.join(
            [SRC] + [p for p in [self.env.get('PYTHONPATH')] if p])
        self.env.pop(instanceuuid.key, None)
        self.var = os.path.join(self.tmpdir, 'var')

    def command(self, *args):
        return [sys.executable, '-m', 'zc.async.ops.cli', 'demo',
                '--var', self.var] + list(args)

    def run_demo(self, *args):
        return subprocess.run(
            self.command(*args), cwd=self.tmpdir, env=self.env,
            capture_output=True, text=True, timeout=DEADLINE,
            stdin=subprocess.DEVNULL)

    def assert_estimate(self, stdout):
        match = re.search(r'^pi is about (\d+\.\d+) ', stdout, re.M)
        self.assertIsNotNone(match, stdout)
        self.assertTrue(2.9 < float(match.group(1)) < 3.4, match.group(1))

    def test_demo_runs_to_completion_with_progress(self):
        process = self.run_demo('--samples', '60000', '--jobs', '3')
        self.assertEqual(process.returncode, 0, process.stderr)
        self.assertEqual(process.stderr, '')
        lines = process.stdout.splitlines()
        self.assertIn('estimating pi from 60000 random points in 3 parallel'
                      ' jobs', lines)
        progress = [line for line in lines if line.startswith('progress')]
        self.assertTrue(progress[-1].endswith(
            '100%  (jobs: 100% 100% 100%)'), progress)
        self.assert_estimate(process.stdout)
        # Everything lives under --var; nothing lands in the cwd.
        self.assertEqual(sorted(os.listdir(self.tmpdir)), ['var'])
        files = set(os.listdir(self.var))
        self.assertTrue({'demo.fs', 'uuid.txt', 'zc-async-demo.log'} <= files)
        with open(os.path.join(self.var, 'zc-async-demo.log')) as f:
            log = f.read()
        self.assertIn('queues collection added', log)
        self.assertIn("agent 'main' added to queue ''", log)
        self.assertIn('deactivated dispatcher', log)
        # A second run starts afresh and keeps the instance UUID.
        with open(os.path.join(self.var, 'uuid.txt')) as f:
            first_uuid = f.readline()
        again = self.run_demo('--samples', '2000', '--jobs', '2')
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assert_estimate(again.stdout)
        with open(os.path.join(self.var, 'uuid.txt')) as f:
            self.assertEqual(f.readline(), first_uuid)

    def test_a_database_in_use_is_left_alone(self):
        os.makedirs(self.var)
        path = os.path.join(self.var, 'demo.fs')
        storage = ZODB.FileStorage.FileStorage(path)
        self.addCleanup(storage.close)
        size = os.path.getsize(path)
        process = self.run_demo('--samples', '100')
        self.assertEqual(process.returncode, 1)
        self.assertIn('%s is in use by another process' % path,
                      process.stderr)
        self.assertEqual(os.path.getsize(path), size)

    def test_ctrl_c_shuts_down_cleanly(self):
        process = subprocess.Popen(
            self.command('--samples', '40000000', '--jobs', '2'),
            cwd=self.tmpdir, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
            # A test run started in the background ignores SIGINT; Ctrl-C
            # in a terminal does not.
            preexec_fn=_default_sigint)
        self.addCleanup(process.kill)
        # Wait until the job runs and reports progress.
        deadline = time.monotonic() + DEADLINE
        for line in process.stdout:
            if line.startswith('progress') and '10%' in line:
                break
            self.assertLess(time.monotonic(), deadline)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=DEADLINE)
        self.assertEqual(process.returncode, 130, err)
        self.assertIn('zc-async: interrupted', err)
        with open(os.path.join(self.var, 'zc-async-demo.log')) as f:
            self.assertIn('deactivated dispatcher', f.read())


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
