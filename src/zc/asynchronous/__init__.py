"""``zc.asynchronous``: the Python-source spelling of the ``zc.async`` package.

``async`` is a keyword since Python 3.7, so ``import zc.async`` cannot be
written in Python source.  Importing ``zc.asynchronous`` (or any of its
submodules) gives the very module objects of ``zc.async``, so classes,
``isinstance`` checks and pickles agree whichever name was used.
"""
import importlib
import importlib.abc
import importlib.util
import sys

_ALIAS = __name__
_REAL = 'zc.async'


class _AliasLoader(importlib.abc.Loader):
    """Load ``zc.asynchronous.X`` by importing ``zc.async.X``."""

    def __init__(self, real_name):
        self.real_name = real_name

    def create_module(self, spec):
        module = importlib.import_module(self.real_name)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        # Nothing to run: the real module is already executed, and the import
        # system files it in sys.modules under the alias name as it is.  It
        # did give the module the alias spec, though: restore the real one,
        # or relative imports made later inside the module warn.
        module.__spec__ = self.real_spec

    def get_code(self, fullname):
        # ``python -m zc.asynchronous.ops.cli`` runs the real module's code.
        real = importlib.util.find_spec(self.real_name)
        return real.loader.get_code(self.real_name)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Map every ``zc.asynchronous.*`` import onto ``zc.async.*``."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_ALIAS + '.'):
            return None
        real_name = _REAL + fullname[len(_ALIAS):]
        if importlib.util.find_spec(real_name) is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, _AliasLoader(real_name), is_package=False)


def _install():
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    real = importlib.import_module(_REAL)
    sys.modules[_ALIAS] = real
    # Submodules already imported under the real name are the same objects.
    for name, module in list(sys.modules.items()):
        if name.startswith(_REAL + '.'):
            sys.modules.setdefault(_ALIAS + name[len(_REAL):], module)


_install()
