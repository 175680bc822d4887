"""Raw clips to a dataset: the real face videos, generated clips, and bad files."""

import json
import os
import shutil

import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import main as main_lib
from affectjax import runcard
from affectjax.data import base, clips, video
from affectjax.data import labels as labels_lib
from affectjax.data import get_dataset as clips_data
from conftest import config_path, train_losses

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')
VIDEOS = os.path.join(DATA, 'videos')
needs_videos = pytest.mark.skipif(not os.path.isdir(VIDEOS),
                                  reason='real data absent: set AFFECTJAX_DATA_DIR to the '
                                  'folder holding videos/')


def write_clip(path, frames=20, seconds=0.8, audio=True, rate=25, seed=0):
  """An MPEG-4 clip of a moving bar with an AAC tone."""
  import av
  rng = np.random.default_rng(seed)
  with av.open(str(path), 'w') as c:
    v = c.add_stream('mpeg4', rate=rate)
    v.width, v.height, v.pix_fmt = 64, 48, 'yuv420p'
    a = c.add_stream('aac', rate=16000) if audio else None
    if a is not None:
      a.layout = 'mono'
    for i in range(frames):
      img = np.full((48, 64, 3), rng.integers(0, 60), np.uint8)
      img[:, (3 * i) % 56:(3 * i) % 56 + 8] = 255
      for p in v.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
        c.mux(p)
    if a is not None:
      t = np.arange(int(16000 * seconds)) / 16000
      x = (0.3 * np.sin(2 * np.pi * rng.integers(200, 800) * t)).astype(np.float32)
      frame = av.AudioFrame.from_ndarray(x[None], format='flt', layout='mono')
      frame.sample_rate = 16000
      for p in a.encode(frame):
        c.mux(p)
    for s in filter(None, (v, a)):
      for p in s.encode(None):
        c.mux(p)


@needs_videos
def test_real_videos_decode_crop_the_face_and_build_once(tmp_path, capsys):
  settings = clips.Settings(frames=8, size=48, face=True, max_seconds=3.0)
  builder = clips.build(VIDEOS, settings, str(tmp_path / 'tfds'))
  out = capsys.readouterr().out
  assert 'Downloading' not in out and f'preparing {builder.name} once from {VIDEOS}' in out
  records = builder.as_data_source()['clips']
  assert len(records) == 2
  by_name = {r['file'].decode() if isinstance(r['file'], bytes) else r['file']: r
             for r in (records[0], records[1])}
  short, long = by_name['single_face.mp4'], by_name['WolfgangLanger_Pexels.mp4']
  assert short['video'].shape == long['video'].shape == (8, 48, 48, 3)
  assert short['video'].dtype == np.uint8 and short['video'].std() > 10
  # 2.4 s of audio at 50 frames/s is 120 real frames; the 19.7 s clip fills 3 s.
  assert abs(float(short['frame_mask'].sum()) - 120) <= 2
  assert float(long['frame_mask'].sum()) == long['frame_mask'].shape[0] == 149
  # A second build with the same clips and settings reuses the prepared data.
  again = clips.build(VIDEOS, settings, str(tmp_path / 'tfds'))
  assert again.data_dir == builder.data_dir
  # The face box: a detector hit on a real face, centred on it (not the frame centre).
  frames = video.read_video_frames(os.path.join(VIDEOS, 'WolfgangLanger_Pexels.mp4'))
  cx, cy, side = video.face_box(frames[::60], 'x', 1.0)
  assert 40 < side < 360 and (cx, cy) != (320, 180)


def test_generated_clips_give_speaker_folds_and_cli_build(tmp_path, capsys):
  folder = tmp_path / 'clips'
  folder.mkdir()
  # RAVDESS names: <modality>-<channel>-<emotion>-<intensity>-<statement>-<rep>-<actor>.
  for actor in range(1, 7):
    for emotion in (1, 5):
      write_clip(folder / f'01-01-{emotion:02d}-01-01-01-{actor:02d}.mp4', seed=actor * 10 + emotion)
  tfds_dir = tmp_path / 'tfds'
  code = main_lib.main(['build-clips', '--input', str(folder), '--labels', 'ravdess',
                        '--frames', '8', '--size', '32', '--max-seconds', '1',
                        '--tfds-dir', str(tfds_dir)])
  assert code == 0
  built = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert built['clips'] == 12
  # A build stopped midway leaves TFDS's temporary beside the version folder; the next
  # build (under the preparation lock) removes it.
  version_dir = built['dataset'].rstrip('/')
  shutil.rmtree(version_dir)
  stale = os.path.join(os.path.dirname(version_dir),
                       f'incomplete.AB12CD_{os.path.basename(version_dir)}')
  os.makedirs(os.path.join(stale, 'shard'))
  assert main_lib.main(['build-clips', '--input', str(folder), '--labels', 'ravdess',
                        '--frames', '8', '--size', '32', '--max-seconds', '1',
                        '--tfds-dir', str(tfds_dir)]) == 0
  capsys.readouterr()
  assert os.path.isdir(version_dir) and not os.path.exists(stale)
  config = config_lib.load(config_path('clips_mae.py:av,smoke,fold2'))
  with config.unlocked():
    config.data.input, config.data.labels, config.data.face = str(folder), 'ravdess', False
    config.data.tfds_dir = str(tfds_dir)
  ds = clips.load(config)
  assert ds.num_classes == 8 and ds.modalities == ('audio', 'video')
  sizes = {k: len(v) for k, v in ds.splits.items()}
  assert sizes == {'train': 8, 'valid': 2, 'test': 2}
  batch = ds.splits['train'].get_batch(np.arange(3))
  assert batch['video'].shape == (3, 8, 32, 32, 3) and batch['video'].dtype == np.float32
  assert batch['audio'].shape == (3, 49, 64) and set(np.unique(batch['label'])) <= {0, 4}
  # No speaker in two splits.
  meta = ds.splits['test'].records
  who = {k: {meta[int(i)]['speaker'] for i in v.index} for k, v in ds.splits.items()}
  assert not (who['train'] & who['test']) and not (who['valid'] & who['test'])


def test_sigterm_stops_build_clips_with_one_line(tmp_path, capsys, monkeypatch):
  import signal
  import time

  def build(*args, **kwargs):  # Stands in for a long build: the signal arrives midway.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    raise AssertionError('the signal did not stop the command')
  monkeypatch.setattr(clips, 'build', build)
  before = signal.getsignal(signal.SIGTERM)
  code = main_lib.main(['build-clips', '--input', str(tmp_path), '--tfds-dir',
                        str(tmp_path / 'tfds')])
  err = capsys.readouterr().err.strip()
  assert code == 3 and err == ('affectjax: stopped: SIGTERM; rerun the same command to start '
                               'again'), err
  assert signal.getsignal(signal.SIGTERM) is before  # Restored after the command.


def test_bad_clips_are_one_line_errors_or_counted_skips(tmp_path, capsys):
  folder = tmp_path / 'bad'
  folder.mkdir()
  write_clip(folder / 'good.mp4')
  write_clip(folder / 'silent.mp4', audio=False)
  write_clip(folder / 'short.mp4', frames=4)
  full = (folder / 'good.mp4').read_bytes()
  (folder / 'truncated.mp4').write_bytes(full[:len(full) // 3])
  (folder / 'garbage.mp4').write_bytes(os.urandom(2000))
  s = clips.Settings(frames=8, size=32, max_seconds=1.0)
  labels = labels_lib.Labels('none')
  for name, match in (('silent.mp4', 'no audio track'),
                      ('short.mp4', '4 video frames, fewer than the 8 asked for'),
                      ('truncated.mp4', 'cannot decode'), ('garbage.mp4', 'cannot decode')):
    with pytest.raises(base.DataError, match=match) as e:
      clips.decode_clip(str(folder / name), s, labels)
    assert str(folder / name) in str(e.value) and '\n' not in str(e.value)
  tfds_dir = tmp_path / 'tfds'
  code = main_lib.main(['build-clips', '--input', str(folder), '--frames', '8', '--size',
                        '32', '--tfds-dir', str(tfds_dir)])
  err = capsys.readouterr().err
  lines = err.strip().splitlines()  # Progress lines, then the one error line.
  assert code == 2 and lines[-1].startswith('affectjax: error: ') and 'bad' in lines[-1], err
  assert sum('error' in line for line in lines) == 1, err
  leftovers = [p for p in tfds_dir.rglob('*') if p.is_file() and 'lock' not in p.name]
  assert not [p for p in leftovers if p.suffix != '.lock' and 'array_record' in p.name]
  code = main_lib.main(['build-clips', '--input', str(folder), '--frames', '8', '--size',
                        '32', '--tfds-dir', str(tfds_dir), '--skip-bad'])
  captured = capsys.readouterr()
  assert code == 0 and 'skipped 4 of 5 clips' in captured.err
  assert json.loads(captured.out.strip().splitlines()[-1])['clips'] == 1
  with pytest.raises(base.DataError, match='no such folder'):
    clips.find_clips(str(tmp_path / 'missing'), ('video',))
  with pytest.raises(base.DataError, match='not a CREMA-D name'):
    labels_lib.Labels('crema-d')(str(folder / 'good.mp4'))
  (tmp_path / 'labels.csv').write_text('file,emotion\ngood.mp4,happy\n')
  with pytest.raises(base.DataError, match='needs columns file,label'):
    labels_lib.Labels(str(tmp_path / 'labels.csv'))


def _train(config, workdir, *overrides):
  code = main_lib.main(['train', '--config', config_path(config), '--workdir', str(workdir),
                        *overrides])
  assert code == 0, config
  return json.loads((workdir / 'results.json').read_text())


@needs_videos
def test_video_mae_pretrains_on_the_real_videos_from_the_cli(tmp_path):
  video = _train('clips_mae.py:video,videos,smoke', tmp_path / 'video',
                 f'--config.data.tfds_dir={tmp_path / "tfds"}')
  assert video['valid']['loss'] > 0 and 'loss_audio' not in video['valid']


@needs_videos
def test_audio_visual_mae_steps_agree_on_one_device_and_a_4x2_mesh(tmp_path):
  """Two encoders (tube-masked video, randomly masked audio), fusion, skip-connected
  decoders and the hierarchical InfoNCE, on the real videos: the same losses and
  parameters whether the batch is split over 4 data shards and the heads over 2."""
  import jax
  config = config_lib.load(config_path('clips_mae.py:av,videos,smoke'),
                           [f'data.tfds_dir={tmp_path}'])
  one, state1 = train_losses(config, (1, 1), 8, 2)
  eight, state8 = train_losses(config, (4, 2), 8, 2)
  assert np.isfinite(one).all() and one[0] > 0
  np.testing.assert_allclose(one, eight, rtol=2e-4)
  for x, y in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state8.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=1e-4)


def test_audio_visual_pretraining_then_fine_tuning_on_labelled_clips(tmp_path):
  folder = tmp_path / 'clips'
  folder.mkdir()
  for actor in range(1, 7):
    for emotion in (1, 5):
      write_clip(folder / f'01-01-{emotion:02d}-01-01-01-{actor:02d}.mp4', seed=actor + emotion)
  data = [f'--config.data.input={folder}', '--config.data.face=False',
          f'--config.data.tfds_dir={tmp_path / "tfds"}']
  pre = _train('clips_mae.py:av,ravdess,smoke', tmp_path / 'pre', *data)
  assert pre['test']['loss'] == pytest.approx(pre['test']['loss_audio'] +
                                              pre['test']['loss_video'])
  assert pre['test']['loss_video'] > 0 and pre['test']['loss_audio'] > 0
  fine = _train('clips_mae_classifier.py:av,finetune,smoke', tmp_path / 'fine', *data,
                f'--config.init.workdir={tmp_path / "pre"}')
  assert 0 <= fine['test']['accuracy'] <= 1
  from affectjax import checkpoint as checkpoint_lib
  import jax
  def flat(workdir, kind):
    ckpt = checkpoint_lib.Checkpoints(str(workdir))
    try:
      tree = ckpt.load_params(kind)[1]
    finally:
      ckpt.close()
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  source, final = flat(tmp_path / 'pre', 'best'), flat(tmp_path / 'fine', 'latest')
  shared = [k for k in final if 'head' not in k]
  assert shared and all(k in source for k in shared)
  assert any('fusion' in k for k in shared)
  # The fine-tuned run on raw video files: the build's decoding, frame sampling, size and
  # log-mel, so the same model inputs as its dataset's record of that clip.
  import affectjax
  run = affectjax.load_run(str(tmp_path / 'fine'))
  clip = str(folder / '01-01-05-01-01-01-03.mp4')
  _, arrays = run.read([clip])
  dataset = clips_data(runcard.read_config(str(tmp_path / 'fine')))
  records = dataset.splits['train'].records
  index = next(i for i in range(len(records)) if records[i]['file'] in (
      b'01-01-05-01-01-01-03.mp4', '01-01-05-01-01-01-03.mp4'))
  built = clips.ClipSource(records, np.array([index]), ('audio', 'video'), False).get_batch(
      np.array([0]))
  for k in ('video', 'audio', 'frame_mask'):
    np.testing.assert_allclose(arrays[k], built[k], atol=1e-6)
  (row,) = run.predict(clip)
  assert row['id'] == clip and sum(row['probabilities'].values()) == pytest.approx(1, abs=1e-5)
  assert set(row['probabilities']) == set(dataset.class_names)
