"""zc.async: a durable, transactional job queue that lives in a ZODB database.

Python source spells this package ``zc.asynchronous`` (``async`` is a
keyword); both names give the same module objects.  Importing the package
has no side effects; it exposes only :data:`local`.
"""
from .threadlocal import local  # noqa: F401
