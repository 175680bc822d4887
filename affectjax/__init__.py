"""affectjax: multimodal affect models in JAX, sharded over a device mesh."""

__version__ = '0.1.0'
