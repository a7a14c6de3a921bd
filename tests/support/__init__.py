"""Helpers every test folder uses: waiting on an observable, and a fault-injecting TCP proxy.

>>> await eventually(lambda: len(received) == 3)          # doctest: +SKIP
>>> async with TcpProxy(broker.target) as proxy: ...      # doctest: +SKIP
"""

from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually, eventually_sync

__all__ = ["TcpProxy", "eventually", "eventually_sync"]
