"""affectjax: multimodal affect models in JAX, sharded over a device mesh."""

from affectjax.version import __version__

__all__ = ['__version__', 'load_run']


def load_run(workdir: str, unfinished: bool = False):
  """A finished run from its workdir alone, ready to `predict` on new inputs (see
  `affectjax.inference`); `unfinished=True` also takes a run stopped before its end."""
  from affectjax import inference
  return inference.load_run(workdir, unfinished)
