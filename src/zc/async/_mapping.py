"""A persistent, read-only BTree mapping for the queue's own collections.

``Quotas`` and ``Dispatchers`` are mappings that users read but change only
through their own methods (``create``, ``register`` ...).  The state layout
(``_data`` OOBTree, ``_len`` Length, ``__parent__``) is the one 1.5 pickles
have.
"""
import BTrees.Length
import BTrees.OOBTree
import persistent

from .utils import BTreeReads


class Mapping(BTreeReads, persistent.Persistent):
    """Read access to a BTree; subclasses write with ``_set``/``_pop``."""

    __parent__ = None

    def __init__(self):
        self._data = BTrees.OOBTree.OOBTree()  # {key: value}
        self._len = BTrees.Length.Length()  # conflict-free len(_data)

    def _set(self, key, value):
        if key not in self._data:
            self._len.change(1)
        self._data[key] = value

    def _pop(self, key):
        value = self._data.pop(key)
        self._len.change(-1)
        return value

    def _read_only(self, *args, **kwargs):
        raise TypeError('%s cannot be changed directly; use its methods'
                        % type(self).__name__)

    __setitem__ = __delitem__ = update = pop = copy = _read_only
