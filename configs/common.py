"""The one variant parser of the config files (imported as `common` from a config beside
it), and the clip folders the clips configs know by name.

A config file states its whole run as literal blocks; what it takes from here is only how
`configs/NAME.py:fold2,smoke` is read: which names it accepts, exactly, and what they mean.
"""

from __future__ import annotations

import itertools
import types

MODALITY_LETTERS = {'t': 'text', 'a': 'audio', 'v': 'vision'}


def subsets(letters: str = 'tav') -> tuple[str, ...]:
  """Modality subsets named by their letters in `letters`' order: 't', 'ta', 'tav', ..."""
  return tuple(''.join(s) for n in range(1, len(letters) + 1)
               for s in itertools.combinations(letters, n))


def modalities(subset: str) -> tuple[str, ...]:
  """'ta' -> ('text', 'audio')."""
  return tuple(MODALITY_LETTERS[x] for x in subset)


def variants(arg: str | None, flags=(), folds: int = 0, **choices) -> types.SimpleNamespace:
  """Reads a config's variants ('fold2,smoke,meld'), exact names only.

  `flags`: names that are True when given. `folds=k`: `fold1` .. `fold<k>` set `.fold`
  (1 when none is given). Each keyword of `choices` is a tuple of names, the first the
  default: at most one of them may be given, and it becomes that attribute. An unknown
  name, a name given twice or two names of one choice is a ValueError that lists what
  the config accepts.
  """
  fold_names = {f'fold{k}': k for k in range(1, folds + 1)}
  out = types.SimpleNamespace(**{f: False for f in flags}, **(
      {'fold': 1} if folds else {}), **{k: names[0] for k, names in choices.items()})
  given = {}
  accepted = [*flags, *([f'fold1..fold{folds}'] if folds else []),
              *itertools.chain.from_iterable(choices.values())]
  items = [x for x in (arg or '').split(',') if x]
  for item in items:
    if items.count(item) > 1:
      raise ValueError(f'config variant {item!r} given twice')
    if item in flags:
      setattr(out, item, True)
      continue
    if item in fold_names:
      key, value = 'fold', fold_names[item]
    else:
      key = next((k for k, names in choices.items() if item in names), None)
      if key is None:
        raise ValueError(f'unknown config variant {item!r} (this config takes: '
                         f'{", ".join(accepted)})')
      value = item
    if key in given:
      raise ValueError(f'config variants {given[key]!r} and {item!r} both set {key}: '
                       'give one')
    given[key] = item
    setattr(out, key, value)
  return out


# Clip folders the clips configs know by name: (folder under the data directory, label
# scheme, number of speaker folds, split). `videos` is ../shared/data/videos: two
# unlabelled real face videos, every clip in every split (a pipeline demo, not a study).
CLIP_CORPORA = {
    'ravdess': ('ravdess/videos', 'ravdess', 6, 'folds'),  # Actor_XX/01-01-*.mp4 (24 actors)
    'cremad': ('crema-d/VideoFlash', 'crema-d', 5, 'folds'),  # 91 speakers' .flv clips
    'videos': ('videos', 'none', 1, 'all'),
}
