"""Tests of the ``gateways`` package."""
