"""What the operator does: the Job path, the pool path, the status sync and the periodic chores.

Flows combine the pure :mod:`kubeworkers_operator.model` with the
:mod:`kubeworkers_operator.adapters`; the composition modules (``main``, ``lifecycle``)
start them and hand them the :class:`~kubeworkers_operator.runtime.Runtime`.
"""
