"""Operations: watching and acting on a zc.async database from outside.

The modules zc.async 2 added for operators, none of them in 1.5 and none
holding anything a database stores: the ``zc-async`` command and its
subcommands (``cli``, ``clidb``, ``clijobs``, ``cliput``,
``clischedules``, ``cliupgrade``, ``sandboxcli``, ``dburi``), the web
dashboard (``web``, ``webapi`` and ``dashboard.*``), Prometheus metrics
(``metrics``), the monitor's line server and job queries
(``monitorserver``, ``monitorquery``), and replays and dry-runs
(``sandbox``, ``sandboxreport``).  They use the package below them;
outside this folder only the worker process (``worker.py``), the monitor
server's installers (``configure.py``, ``zcml.py``) and the ``asyncdb``
command (``monitordb.py``, which chooses jobs with ``monitorquery``)
import them.  Importing the subpackage has no side effects.
"""
