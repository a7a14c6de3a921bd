"""Lockgate's test suite, a package so that its folders import as ``tests.<folder>``.

The folders share names with the code packages (``tests/broker`` beside ``broker``); as
packages they cannot shadow them, and helpers import by their full name
(``from tests.support import eventually``) with no ``sys.path`` changes.
"""
