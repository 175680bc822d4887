"""A folder of raw clips (videos with audio, or audio files) as a dataset.

  affectjax build-clips --input DIR [--labels ravdess|crema-d|none|FILE.csv] [--frames 16]
                        [--size 160] [--face] [--modalities audio,video] [--skip-bad]

decodes every clip once into a TFDS dataset of ArrayRecord shards (under
`config.data.tfds_dir`, default ~/.cache/affectjax/tfds), keyed by the clips' content and
the build settings, so a changed clip or setting builds again; training configs with
`data.name = 'clips'` build it the same way on first use and read it back through
`tfds.data_source` (random access, grain batches, per-process slicing).

Per clip:
- video (PyAV, FFmpeg's decoders): every frame decoded, `frames` of them taken evenly
  spaced over the clip; with `face`, one square box per clip around the face (OpenCV's
  bundled Haar cascade, run on each sampled frame; the median box over the frames where a
  face was found, enlarged by `face_margin`), cropped and resized to `size` x `size`, kept
  as uint8 RGB; models get (x / 255 - ImageNet mean) / std, as VideoMAE feeds them.
- audio: the audio track (or the audio file) decoded, mixed to mono and resampled to
  16 kHz, padded or cut to `max_seconds`, and turned into log-mel frames by the speech
  pipeline's `audio.log_mel` (the one implementation), with `frame_mask`.
- label and speaker from the file name (`ravdess`: 03-01-<emotion>-...-<actor>;
  `crema-d`: <speaker>_<sentence>_<EMOTION>_<level>), from a CSV with columns
  `file,label[,speaker]` (label names; classes in first-seen order), or none (unlabelled,
  for pretraining).

A truncated or unreadable file, a video without the audio track it needs, a clip with
fewer frames than `frames`, or one where no face is found is a one-line error naming the
file; with `skip_bad` such clips are left out and their count (and the first reasons) is
printed at the end. Nothing half-built stays behind: TFDS writes into a temporary folder
and renames it when complete.

Splits (`config.data.split`): `folds` puts whole speakers into `num_folds` folds (fold k is
test, the next one validation, the rest training: no speaker in two splits); `all` puts
every clip into every split (`repeat` times in training, so a batch can be filled), for
pipeline demos on a handful of unlabelled clips only.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys

import numpy as np

from affectjax import errors
from affectjax import progress
from affectjax.data import audio, base, prepared, video
from affectjax.data import labels as labels_lib

VIDEO_EXTENSIONS = video.VIDEO_EXTENSIONS
AUDIO_EXTENSIONS = audio.AUDIO_EXTENSIONS
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)
SAMPLE_RATE = audio.SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a build depends on besides the clips themselves."""
  modalities: tuple[str, ...] = ('audio', 'video')
  labels: str = 'none'  # ravdess | crema-d | none | path of a CSV
  frames: int = 16
  size: int = 160
  face: bool = False
  face_margin: float = 1.3
  max_seconds: float = 4.0
  window_ms: float = 25.0
  hop_ms: float = 20.0
  n_mels: int = 64
  skip_bad: bool = False

  def check(self):
    bad = set(self.modalities) - {'audio', 'video'}
    if bad or not self.modalities:
      raise errors.DataError(f'clips: modalities {self.modalities} must be audio and/or video')
    if self.frames < 1 or self.size < 8:
      raise errors.DataError(f'clips: frames={self.frames} must be >= 1 and size={self.size} '
                           '>= 8')


def find_clips(folder: str, modalities) -> list[str]:
  if not os.path.isdir(folder):
    raise errors.DataError(f'{folder}: no such folder of clips')
  ext = VIDEO_EXTENSIONS if 'video' in modalities else VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
  files = sorted(p for p in glob.glob(os.path.join(folder, '**', '*'), recursive=True)
                 if p.lower().endswith(ext) and os.path.isfile(p))
  if not files:
    raise errors.DataError(f'{folder}: no clips (looked for {" ".join(ext)})')
  return files


def video_clip(path: str, s: Settings) -> np.ndarray:
  """(frames, size, size, 3) uint8."""
  import cv2
  frames = video.read_video_frames(path)
  picked = [frames[i] for i in video.sample_indices(len(frames), s.frames, path)]
  if s.face:
    box = video.face_box(picked, path, s.face_margin)
    picked = [video.crop_square(f, box) for f in picked]
  else:
    picked = [video.center_square(f) for f in picked]
  return np.stack([cv2.resize(f, (s.size, s.size), interpolation=cv2.INTER_AREA)
                   for f in picked]).astype(np.uint8)


def audio_features(path: str, s: Settings) -> tuple[np.ndarray, np.ndarray]:
  """(log-mel (F, n_mels), frame_mask (F,)) of the first `max_seconds`."""
  x = audio.read_audio_track(path)
  n = int(s.max_seconds * SAMPLE_RATE)
  wave = np.zeros((1, n), np.float32)
  wave[0, :min(n, len(x))] = x[:n]
  feats, mask = audio.log_mel(wave, np.asarray([min(n, len(x))]), window_ms=s.window_ms,
                                hop_ms=s.hop_ms, n_mels=s.n_mels)
  return feats[0], mask[0]


def decode_clip(path: str, s: Settings, labels: labels_lib.Labels) -> dict:
  label, speaker = labels(path)
  out = {'file': os.path.basename(path), 'speaker': speaker, 'label': np.int32(label)}
  if 'video' in s.modalities:
    out['video'] = video_clip(path, s)
  if 'audio' in s.modalities:
    out['audio'], out['frame_mask'] = audio_features(path, s)
  return out


@prepared.builder_cache
def _builder_class():
  """Defines the TFDS builder on first use (keeps tfds out of light imports)."""
  tfds = prepared.tfds()

  class ClipsConfig(tfds.core.BuilderConfig):
    def __init__(self, *, files=(), settings=Settings(), **kw):
      super().__init__(**kw)
      self.files, self.settings = tuple(files), settings

  class Clips(tfds.core.GeneratorBasedBuilder):
    """Decoded clips (see affectjax/data/clips.py)."""
    VERSION = tfds.core.Version('1.0.0')
    BUILDER_CONFIG_CLASS = ClipsConfig

    def _info(self):
      s = self.builder_config.settings
      features = {'file': tfds.features.Text(), 'speaker': tfds.features.Text(),
                  'label': tfds.features.Scalar(np.int32)}
      if 'video' in s.modalities:
        features['video'] = tfds.features.Tensor(shape=(s.frames, s.size, s.size, 3),
                                                 dtype=np.uint8,
                                                 encoding=tfds.features.Encoding.ZLIB)
      if 'audio' in s.modalities:
        frames = audio_frames(s)
        features['audio'] = tfds.features.Tensor(shape=(frames, s.n_mels), dtype=np.float32)
        features['frame_mask'] = tfds.features.Tensor(shape=(frames,), dtype=np.float32)
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      return {'clips': self._generate_examples()}

    def _generate_examples(self):
      s = self.builder_config.settings
      labels, skipped = labels_lib.Labels(s.labels), []
      files = self.builder_config.files
      bar = progress.Progress(len(files), f'decoding {len(files)} clips once into '
                              f'{self.data_dir_root}', unit='clips')
      for i, path in enumerate(files):
        try:
          example = decode_clip(path, s, labels)
        except errors.DataError as e:
          if not s.skip_bad:
            raise
          skipped.append(str(e))
          continue
        finally:
          bar.update()
        yield i, example
      bar.close()
      if skipped:
        print(f'clips: skipped {len(skipped)} of {len(files)} clips (bad input); first: '
              f'{skipped[0]}', file=sys.stderr)
      if len(skipped) == len(files):
        raise errors.DataError(f'clips: every one of the {len(files)} clips was bad')

  return (Clips, ClipsConfig)


def audio_frames(s: Settings) -> int:
  n_fft = int(SAMPLE_RATE * s.window_ms / 1000)
  hop = int(SAMPLE_RATE * s.hop_ms / 1000)
  return 1 + (int(s.max_seconds * SAMPLE_RATE) - n_fft) // hop


def build(folder: str, settings: Settings, tfds_dir: str):
  """Builds (once) and returns the TFDS builder for the clips under `folder`."""
  settings.check()
  files = find_clips(folder, settings.modalities)
  labels_lib.Labels(settings.labels)  # A bad label scheme or CSV fails before any decoding.
  key = prepared.content_hash(files + ([settings.labels] if os.path.isfile(settings.labels)
                                       else []))
  digest = prepared.hash_text(repr(dataclasses.astuple(settings)))
  Clips, ClipsConfig = _builder_class()
  builder = Clips(data_dir=tfds_dir, file_format='array_record',
                  config=ClipsConfig(name=f'clips_{key}_{digest}', files=files,
                                     settings=settings))
  return prepared.build_once(builder, folder)


def model_inputs(rows, fields) -> dict[str, np.ndarray]:
  """Decoded clips (`decode_clip` dicts or built records) -> the model's arrays: video as
  float32 normalised with the ImageNet mean and std, log-mel and frame mask as float32."""
  out = {}
  for k in fields:
    v = np.stack([np.asarray(r[k]) for r in rows])
    if k == 'video':
      v = (v.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    out[k] = v.astype(np.int32) if k == 'label' else v.astype(np.float32)
  return out


INPUTS = 'video or audio clips'  # What a run on built clips predicts from.
READS_VIDEO = True


def inputs_from_files(files: list[str], preprocess: dict, arrays=None) -> dict[str, np.ndarray]:
  """Video (or audio) files through the pipeline a clips run was built with: the same
  frame sampling, face crop, size and log-mel (`clips_preprocess`)."""
  s = Settings(**{k: (tuple(v) if k == 'modalities' else v) for k, v in preprocess.items()
                  if k != 'kind'})
  rows = [decode_clip(f, s, labels_lib.Labels('none')) for f in files]
  fields = [m for m in ('video', 'audio') if m in s.modalities]
  return model_inputs(rows, fields + (['frame_mask'] if 'audio' in s.modalities else []))


def clips_preprocess(s: 'Settings') -> dict:
  """What `inputs_from_files` needs to repeat a build's decoding on new files."""
  out = dataclasses.asdict(s)
  out.pop('labels')
  out.pop('skip_bad')
  out['modalities'] = list(s.modalities)
  return {'kind': 'clips', **out}


class ClipSource(base.ComputedSource):
  """Random access to some records of a built clips dataset, as the pipeline wants them:
  `get_batch(indices)` -> {'video' float32 normalised, 'audio', 'frame_mask', 'label'}."""

  def __init__(self, records, index: np.ndarray, modalities, labelled: bool):
    self.records, self.index = records, np.asarray(index, np.int64)
    self.fields = [m for m in ('video', 'audio') if m in modalities]
    if 'audio' in modalities:
      self.fields.append('frame_mask')
    if labelled:
      self.fields.append('label')

  def __len__(self) -> int:
    return len(self.index)

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return model_inputs([self.records[int(i)] for i in self.index[np.asarray(indices)]],
                        self.fields)


def settings_of(config) -> Settings:
  d = config.data
  labels = d.labels
  if labels not in ('ravdess', 'crema-d', 'none') and not os.path.isabs(labels):
    labels = os.path.join(_input_dir(config), labels)
  return Settings(tuple(d.modalities), labels, int(d.num_frames), int(d.size), bool(d.face),
                  float(d.face_margin), float(d.max_seconds), float(d.window_ms),
                  float(d.hop_ms), int(d.n_mels), bool(d.skip_bad))


def _input_dir(config) -> str:
  path = config.data.input
  if not path:
    raise errors.DataError('config.data.input: name the folder of clips')
  if os.path.isabs(path):
    return path
  return os.path.join(prepared.data_dir(config, f'{path}/'), path)


def split_speakers(speakers: np.ndarray, num_folds: int, fold: int) -> dict[str, np.ndarray]:
  """Speaker-independent folds: sorted speakers dealt round-robin into `num_folds` folds;
  fold `fold` is test, the next one validation, the rest training."""
  unique = sorted(set(speakers.tolist()))
  if not 1 <= fold <= num_folds or len(unique) < num_folds:
    raise errors.DataError(f'config.data: fold {fold} of {num_folds} needs at least '
                         f'{num_folds} speakers (found {len(unique)})')
  fold_of = {s: i % num_folds for i, s in enumerate(unique)}
  which = np.asarray([fold_of[s] for s in speakers.tolist()])
  test, valid = fold - 1, fold % num_folds
  return {'train': np.flatnonzero((which != test) & (which != valid)),
          'valid': np.flatnonzero(which == valid), 'test': np.flatnonzero(which == test)}


def load(config) -> base.Dataset:
  d = config.data
  settings = settings_of(config)
  folder = _input_dir(config)
  builder = build(folder, settings, prepared.tfds_dir(config))
  records = builder.as_data_source()['clips']
  meta = [records[i] for i in range(len(records))]
  speakers = np.asarray([m['speaker'].decode() if isinstance(m['speaker'], bytes)
                         else m['speaker'] for m in meta])
  labels = labels_lib.Labels(settings.labels)
  labelled = bool(labels.names)
  if d.split == 'all':
    index = {k: np.arange(len(meta)) for k in base.SPLITS}
    index['train'] = np.tile(index['train'], int(d.repeat))
  elif d.split == 'folds':
    index = split_speakers(speakers, int(d.num_folds), int(d.fold))
  else:
    raise errors.DataError(f'config.data.split: unknown {d.split!r} (folds | all)')
  splits = {k: ClipSource(records, v, settings.modalities, labelled) for k, v in index.items()}
  for k, v in splits.items():
    if not len(v):
      raise errors.DataError(f'{folder}: split {k!r} is empty')
  return base.Dataset(splits, tuple(settings.modalities),
                      len(labels.names) if labelled else None, f'{folder} (clips)',
                      labels.names or None, preprocess=clips_preprocess(settings))
