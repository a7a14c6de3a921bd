"""Tests of the ``broker.store`` package."""
