import os

from setuptools import find_namespace_packages, setup


def read(*names):
    with open(os.path.join(os.path.dirname(__file__), *names)) as f:
        return f.read()


TESTS_REQUIRE = [
    'zope.testrunner',
    'zope.testing',
    'zope.testbrowser',
    'webtest',
    'manuel',
    'websocket-client',  # drives headless Chromium (dashboard tests)
]

setup(
    name='zc.async',
    version='2.0.0.dev0',
    description=('A durable, transactional job queue that lives in a ZODB '
                 'database.'),
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
    license='ZPL-2.1',
    python_requires='>=3.10',
    package_dir={'': 'src'},
    packages=find_namespace_packages('src', include=['zc.*']),
    include_package_data=True,
    package_data={'': ['*.zcml', '*.txt', '*.rst', '*.html', '*.js',
                       '*.css']},
    zip_safe=False,
    install_requires=[
        'setuptools',
        'ZODB >= 6',
        'ZEO >= 6',
        'persistent',
        'BTrees',
        'transaction',
        'zc.queue',
        'zope.minmax',
        'Twisted',
        'zope.interface',
        'zope.component',
        'zope.event',
        'zope.i18nmessageid',
        'zope.annotation',
        'zope.authentication',
        'zope.configuration',
        'zope.security',
        'zope.app.appsetup',
        'zodburi',
        # 1.5 databases store pytz.UTC in their datetimes (zc.async's and the
        # application's): upgraded databases need it to load.
        'pytz',
        # Cron rules of recurring jobs (zc.async.schedule); cronsim, the
        # other well-kept parser, needs Python 3.11 and we support 3.10.
        'croniter >= 6',
        'tzdata; sys_platform == "win32"',  # IANA zones for zoneinfo
    ],
    extras_require={
        'test': TESTS_REQUIRE,
        'grok': ['grok', 'zope.app.wsgi', 'waitress'],
        'relstorage': ['RelStorage', 'psycopg2-binary'],
        'metrics': ['prometheus-client'],
        # Step 1 of upgrading a 1.5 database (docs/upgrading.rst).
        'upgrade': ['zodbupdate >= 3', 'pytz'],
        # Building the documentation (.ci/run: sphinx-build -W).
        'docs': ['Sphinx'],
    },
    entry_points={
        # Generated scripts import the module in Python source, where
        # ``async`` is a keyword: name it by its importable spelling.
        'console_scripts': ['zc-async = zc.asynchronous.ops.cli:main'],
        # zodbupdate applies these renames to a 1.5 database (see
        # zc.async.upgrade).
        'zodbupdate': ['zc.async = zc.asynchronous.upgrade:RENAMES'],
    },
    classifiers=[
        'Framework :: ZODB',
        'Framework :: Zope :: 3',
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Zope Public License',
    ],
)
