#!/usr/bin/env python3
"""Set up a zc.async development environment, then optionally run a command.

Usage (from the checkout, with only ``python3`` installed)::

    python3 bootstrap.py                # make .venv and bin/
    python3 bootstrap.py demo [ARGS]    # ... then run bin/zc-async demo ARGS
    python3 bootstrap.py test [ARGS]    # ... then run bin/test ARGS

It makes the virtual environment ``.venv`` (standard ``venv``), installs
zc.buildout and this package (editable, with the extras listed in
:data:`EXTRAS`, all that the tests and docs use) there, and runs buildout on
``buildout.cfg``, which makes ``bin/test``, ``bin/zc-async`` and the
interpreter ``bin/py``.  Buildout takes the dependencies from
``.venv``, so ``.venv/bin/python`` (which tests use for subprocesses) and the
``bin/`` scripts see the same packages.  The installation steps run again
only when ``buildout.cfg``, ``setup.py`` or this file changed, so re-running
is fast.
"""
import hashlib
import os
import signal
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, '.venv')
BIN = os.path.join(HERE, 'bin')
STAMP = os.path.join(VENV, 'zc.async-buildout.stamp')
# Files whose change means the installation steps must run again.
INPUTS = ('buildout.cfg', 'setup.py', 'bootstrap.py')
SCRIPTS = ('test', 'zc-async', 'py')
COMMANDS = {'test': ['test'], 'demo': ['zc-async', 'demo']}
BUILDOUT_REQUIREMENT = 'zc.buildout >= 4'
# The extras of setup.py installed with the package: the one list of them.
EXTRAS = ('test', 'grok', 'relstorage', 'metrics', 'upgrade', 'docs')


def venv_script(name):
    scripts = 'Scripts' if os.name == 'nt' else 'bin'
    return os.path.join(VENV, scripts, name)


def run(*command):
    print('bootstrap: ' + ' '.join(command), flush=True)
    subprocess.run(command, cwd=HERE, check=True)


def ensure_venv():
    if os.path.exists(venv_script('pip')):
        return
    try:
        venv.create(VENV, with_pip=True, clear=True)
    except (OSError, subprocess.CalledProcessError) as error:
        sys.exit('bootstrap: cannot create %s (%s); this Python needs its'
                 ' venv and ensurepip modules (on Debian and Ubuntu:'
                 ' apt install python3-venv)' % (VENV, error))


def inputs_digest():
    digest = hashlib.sha256(sys.version.encode())
    for name in INPUTS:
        with open(os.path.join(HERE, name), 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def ensure_installed():
    digest = inputs_digest()
    if _read(STAMP) == digest and all(
            os.path.exists(os.path.join(BIN, name)) for name in SCRIPTS):
        return
    run(venv_script('python'), '-m', 'pip', 'install', '--quiet',
        BUILDOUT_REQUIREMENT, '--editable', package_requirement())
    run(venv_script('buildout'), '-c', os.path.join(HERE, 'buildout.cfg'))
    with open(STAMP, 'w') as f:
        f.write(digest)


def package_requirement():
    """This checkout, with :data:`EXTRAS`, as pip names it."""
    return '%s[%s]' % (HERE, ','.join(EXTRAS))


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def main(argv):
    if argv and argv[0] not in COMMANDS:
        sys.exit('bootstrap: unknown command %r; expected one of %s'
                 % (argv[0], ', '.join(sorted(COMMANDS))))
    ensure_venv()
    ensure_installed()
    if not argv:
        print('bootstrap: ready; run bin/test or bin/zc-async demo')
        return 0
    script, *args = COMMANDS[argv[0]]
    return run_command([os.path.join(BIN, script)] + args + argv[1:])


def run_command(command):
    """Run ``command`` with Ctrl-C (SIGINT) working as in a terminal.

    A process started in the background, as by some CI runners, inherits
    SIGINT ignored; the command (and the processes its tests start and
    interrupt) get the default back.  A Ctrl-C reaches the command too, so
    this process just goes on waiting for it.
    """
    process = subprocess.Popen(
        command, cwd=HERE,
        preexec_fn=_default_sigint if os.name == 'posix' else None)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            pass


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
