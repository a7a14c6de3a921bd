"""Tests of the ``clients`` package."""
