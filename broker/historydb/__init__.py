"""Queryable history in PostgreSQL (cluster mode): the message logger and its reads.

* :mod:`~broker.historydb.rows`: a stored batch -> one row per event (pure);
* :mod:`~broker.historydb.schema`: the table (migrations, component ``history``) and its
  daily partitions;
* :mod:`~broker.historydb.writer`: rows -> the table, exactly once (COPY, INSERT ... ON
  CONFLICT DO NOTHING);
* :mod:`~broker.historydb.logger`: :class:`MessageLogger`, the JetStream consumer that feeds
  the writer and measures its lag;
* :mod:`~broker.historydb.reader`: :class:`PgHistoryReader`, the history reads
  (``broker.history.History``'s ``read_batches``, ``scan_batches``, ``batch_containing``)
  and the lookup by CloudEvents id.
"""
