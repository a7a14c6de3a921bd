"""Installs the top-level folders under one import name: ``broker/`` is ``lockgate.broker``,
and so on, so that installing Lockgate claims no generic name (``clients``, ``policy``...).

``lockgate`` itself is an implicit namespace package; the folders do not move. Everything else
is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("broker", "policy", "gateways", "clients")

setup(
    packages=[
        f"lockgate.{p}" for p in find_packages(include=[n for f in FOLDERS for n in (f, f + ".*")])
    ],
    package_dir={f"lockgate.{f}": f for f in FOLDERS},
)
