"""relnas: differentiable architecture search with relaxed structural parameters."""

__version__ = "0.1.0"
