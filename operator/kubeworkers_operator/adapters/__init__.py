"""The operator's edges: the Kubernetes API client, its Events, metrics, and the writers on top.

Each outside system is reached through one module here (the Kubernetes API through
:mod:`.kube`, its Events through :mod:`.events`); the flows above call these and never
open a connection of their own.
"""
