"""Code that a process lacks, for the tests of jobs it cannot load.

Not a test module.  :class:`GoneModule` writes a module in a temporary
directory and imports it, so a test can make jobs with its functions and
classes; ``vanish()`` then takes it away from this process, as if its
module were not on a worker's path.  :class:`Fussy` and :class:`Unstorable`
are classes of this module whose instances stop loading, or storing, when
a test says so (as after a change of code).
"""
import importlib
import os
import shutil
import sys
import tempfile
import uuid

SOURCE = '''\
import persistent
import zc.asynchronous.job


def double(n):
    return 2 * n


def tallied(tally, n):
    """Counts its committed run (see zc.async.tests.jobs_for_processes)."""
    tally.change(1)
    return 2 * n


def record(result):
    """A failure callback: returns what the failure says."""
    return 'called back with %s' % (result.value,)


class Thing:
    def __init__(self, n):
        self.n = n


class Owner(persistent.Persistent):
    def run(self, n):
        return n + 100


class SpecialJob(zc.asynchronous.job.Job):
    pass
'''


class GoneModule:
    """A module of :data:`SOURCE` under a new name, importable until
    :meth:`vanish` (or written to ``directory`` for other processes)."""

    def __init__(self, directory=None, source=SOURCE):
        self.name = 'zc_async_gone_%s' % uuid.uuid4().hex[:12]
        self.owned = directory is None
        self.directory = directory or tempfile.mkdtemp(
            prefix='zc.async-gone-')
        with open(os.path.join(self.directory, self.name + '.py'), 'w') as f:
            f.write(source)
        sys.path.insert(0, self.directory)
        importlib.invalidate_caches()
        self.module = importlib.import_module(self.name)

    def __getattr__(self, name):
        return getattr(self.module, name)

    def vanish(self):
        """This process cannot import the module any more."""
        if self.directory in sys.path:
            sys.path.remove(self.directory)
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()

    def clean_up(self):
        self.vanish()
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)


class Fussy:
    """Loads only while ``Fussy.refuse`` is false (a test sets it)."""

    refuse = False

    def __init__(self, n):
        self.n = n

    def __setstate__(self, state):
        if Fussy.refuse:
            raise ValueError('Fussy refuses to load')
        self.__dict__.update(state)


class Unstorable:
    """Stores only while ``Unstorable.refuse`` is false (a test sets it)."""

    refuse = False

    def __init__(self, n):
        self.n = n

    def __reduce_ex__(self, protocol):
        if Unstorable.refuse:
            raise TypeError('Unstorable refuses to be stored')
        return super().__reduce_ex__(protocol)
