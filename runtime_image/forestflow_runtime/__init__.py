"""ForestFlow model server: one process serves one model over OIP v2, KServe v1 and plain JSON.

Owns loading, warm-up, dynamic batching, hot swap, validation and metrics for a single
variant. It must not import anything of ForestFlow outside this package: the image ships alone.
"""

__version__ = "0.1.0"
