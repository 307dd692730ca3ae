"""The kubeworkers operator: WorkerPool and Job custom resources, reconciled with kopf."""
