"""Default values of the operator's knobs: one home, read by the settings and by the pure model.

:class:`~kubeworkers_operator.settings.OperatorSettings` takes its defaults from here,
and so do the model functions' keyword defaults (a test calling them without
settings gets the same numbers the operator runs with).
"""

from __future__ import annotations

#: Cap on the JSON size of ``status.output`` in bytes (etcd objects are limited to ~1.5 MiB).
DEFAULT_OUTPUT_LIMIT = 16 * 1024
#: Secret (in the pool's namespace) holding the Redis URL when ``WorkerPool.spec.redis`` is unset.
DEFAULT_REDIS_SECRET = "kubeworkers-redis"
#: Key of the Redis URL in that Secret.
DEFAULT_REDIS_SECRET_KEY = "url"
