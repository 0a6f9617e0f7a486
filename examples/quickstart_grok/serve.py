"""Serve the zc.async Grok quickstart application.

    python examples/quickstart_grok/serve.py [--host 127.0.0.1] [--port 8080]
                                             [--var DIR]

then open http://127.0.0.1:8080/pi.  The database is a FileStorage in
``DIR`` (``var/`` beside this file by default), which also holds the
instance UUID (``uuid.txt``) and the generated ``zope.conf``.  The site's
ZCML (``site.zcml``) includes zc.async's basic dispatcher policy, so opening
the database starts the dispatcher; Ctrl-C (or SIGTERM) stops the server and
deactivates the dispatcher.  Needs ``pip install 'zc.async[grok]'``.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

ZOPE_CONF = '''\
site-definition %(site_zcml)s

<zodb>
  <filestorage>
    path %(var)s/Data.fs
  </filestorage>
</zodb>

<eventlog>
  level %(log_level)s
  <logfile>
    path STDOUT
    format %%(asctime)s %%(levelname)s %%(name)s %%(message)s
  </logfile>
</eventlog>
'''


def make_app(var, log_level='INFO'):
    """The site's WSGI application, on the database in ``var``.

    Processes ``site.zcml`` and opens the database the way Zope 3 does
    (``zope.app.wsgi``, which fires ``DatabaseOpened``: the dispatcher
    starts), adds the ``pi`` application if the database has none, and
    returns ``(WSGI application, database)``.  Logs of ``log_level`` and
    above go to stdout.
    """
    if HERE not in sys.path:
        sys.path.insert(0, HERE)  # the pi_quickstart package
    os.makedirs(var, exist_ok=True)
    os.environ.setdefault('ZC_ASYNC_UUID', os.path.join(var, 'uuid.txt'))
    conf = os.path.join(var, 'zope.conf')
    with open(conf, 'w') as f:
        f.write(ZOPE_CONF % dict(
            site_zcml=os.path.join(HERE, 'site.zcml'), var=var,
            log_level=log_level))
    import transaction
    import zope.app.wsgi
    import zope.event
    from pi_quickstart.app import install
    db = zope.app.wsgi.config(conf)
    with transaction.manager as txn:
        conn = db.open()
        txn.note('zc.async quickstart: install the pi application')
        install(conn.root()['Application'])
    conn.close()
    app = zope.app.wsgi.WSGIPublisherApplication(db)
    zope.event.notify(
        zope.app.wsgi.interfaces.WSGIPublisherApplicationCreated(app))
    return app, db


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Serve the zc.async Grok quickstart application.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument('--var', default=os.path.join(HERE, 'var'),
                        help='where the database lives (%(default)s)')
    args = parser.parse_args(argv)
    app, db = make_app(os.path.abspath(args.var))
    import waitress.server
    server = waitress.server.create_server(app, host=args.host,
                                           port=args.port)
    print('Serving http://%s:%d/pi' % (args.host, args.port), flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        db.close()


if __name__ == '__main__':
    main()
