"""kubeworkers: typed Python handlers run by an autoscaled fleet of Kubernetes worker pods."""

__version__ = "0.1.0"
