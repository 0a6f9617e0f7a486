"""The database argument of the ``zc-async`` commands, checked before
anything is opened.

``zodburi`` resolves the URIs (``file://``, ``zeo://``, ``postgres://``
...); a path without a scheme names a ZConfig file.  :func:`checked` adds
what an operator needs on top:

* a path to a FileStorage file (``/srv/var/Data.fs``: recognised by the
  file's header, or, for a file that does not exist yet, by its ``.fs``
  ending) means ``file://`` that path;
* a FileStorage that does not exist is refused, unless the command may
  create a database (``zc-async worker --install``) or the URI asks for it
  with ``create=true``: a mistyped path must not start an empty database.
  ``create`` is not passed on to the storage, for which it means "start
  afresh" and would empty an existing file;
* a ``zeo://`` URI names a port (``zeo://HOST:PORT``) or a socket
  (``zeo:///path/to/socket``): zodburi's fallbacks (port 9991, the socket
  ``.``) are not what anybody meant.
"""
import os
import urllib.parse

# The header of a FileStorage file (ZODB.FileStorage.packed_version) when
# its pickles are Python 3's, and Python 2's (a zc.async 1.5 database).
FILESTORAGE_HEADERS = (b'FS30', b'FS21')

_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')


def checked(text, create=False):
    """``text`` (a URI or a path) as the URI or ZConfig path to open.

    ``create``: the caller may create a missing FileStorage.  Raises
    ValueError saying what is wrong with ``text``.
    """
    uri = text
    if '://' not in uri:
        if not _is_filestorage_path(uri):
            return uri  # a ZConfig file
        uri = 'file://' + os.path.abspath(uri)
    scheme = uri.split('://', 1)[0]
    if scheme == 'file':
        return _checked_file_uri(uri, create, text)
    if scheme == 'zeo':
        _check_zeo_uri(uri)
    return uri


def _is_filestorage_path(path):
    if not os.path.exists(path):
        return path.endswith('.fs')
    try:
        with open(path, 'rb') as f:
            return f.read(4) in FILESTORAGE_HEADERS
    except OSError:  # a directory, no permission: the ZConfig path reports it
        return False


def _checked_file_uri(uri, create, given):
    # Split as zodburi does (not urlsplit: Windows file names).
    path, _, query = uri[len('file://'):].partition('?')
    options = urllib.parse.parse_qsl(query, keep_blank_values=True)
    wanted = [value for name, value in options if name == 'create']
    if wanted:
        create = create or _flag(wanted[-1], uri)
        options = [(name, value) for name, value in options
                   if name != 'create']
        query = urllib.parse.urlencode(options)
    if not create and not os.path.exists(os.path.normpath(path)):
        raise ValueError(
            'no FileStorage file %r (database %r); a new, empty database is '
            'created only on request: zc-async worker --install, or '
            'create=true in the URI' % (os.path.normpath(path), given))
    return 'file://%s%s%s' % (path, '?' if query else '', query)


def _flag(value, uri):
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError('create=%s in %r: expected true or false'
                     % (value, uri))


def _check_zeo_uri(uri):
    # zodburi reads it as an http URL too.
    parts = urllib.parse.urlsplit(uri.replace('zeo://', 'http://', 1))
    if parts.netloc:
        try:
            port = parts.port
        except ValueError as e:
            raise ValueError('bad port in the ZEO URI %r: %s' % (uri, e))
        if port is None:
            raise ValueError(
                'the ZEO URI %r names no port: use zeo://HOST:PORT (ZEO has '
                'no standard port)' % (uri,))
    elif not parts.path:
        raise ValueError(
            'the ZEO URI %r names no server: use zeo://HOST:PORT, or '
            'zeo:///PATH for a unix socket' % (uri,))
