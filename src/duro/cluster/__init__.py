"""Cluster mode on NATS JetStream (DESIGN.md §5): node registration and object leases with fencing
tokens (:mod:`.leases`), the commit journal's replicated implementation (:mod:`.journal`), and real
nats-server processes for tests and local clusters (:mod:`.testing`).

Importing this package imports nothing of ``nats``; its modules do, and only cluster mode imports
them (the ``cluster`` extra: ``pip install 'duro[cluster]'``). The embedded default never does.
"""
