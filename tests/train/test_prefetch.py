"""Prefetched batches: the same stream, in the same order, drawn one step ahead in another thread; drawing errors
reach the training loop, and through it the CLI."""

import subprocess
import sys
import threading
import time

import pytest
import torch

from samstream.data.synth import synthesize
from samstream.errors import ConfigError
from samstream.train.coco_batches import CocoBatches
from samstream.train.prefetch import Prefetched
from samstream.train.world_batches import WorldBatches


class _Recording(WorldBatches):
    """A world stream that notes the thread each batch is drawn on."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.threads: list[str] = []

    def sample(self, pairs: int):
        self.threads.append(threading.current_thread().name)
        return super().sample(pairs)


def test_prefetched_batches_are_the_streams_own_in_order():
    direct = WorldBatches(64, 32, seed=5)
    expected = [direct.sample(2) for _ in range(3)]
    stream = _Recording(64, 32, seed=5)
    with Prefetched(stream, 2) as batches:
        got = [batches.sample()]
        deadline = time.monotonic() + 30
        while len(stream.threads) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(stream.threads) == 2  # the second batch is drawn before anyone asks for it
        got += [batches.sample() for _ in range(2)]
    for want, batch in zip(expected, got):
        assert batch.texts == want.texts
        assert torch.equal(batch.pixels, want.pixels)
    assert all(name.startswith("samstream-batches") for name in stream.threads)  # never on the caller's thread


@pytest.fixture
def unreadable_coco(tmp_path):
    """A COCO annotation file whose images are gone."""
    synthesize(tmp_path / "coco", images=2, width=64, height=64, seed=3, progress=False)
    for image in (tmp_path / "coco/images").iterdir():
        image.unlink()
    return tmp_path / "coco/images.json"


def test_a_drawing_error_surfaces_at_the_sample_that_returns_it(unreadable_coco):
    with Prefetched(CocoBatches(str(unreadable_coco), 64, 32, seed=0), 1) as batches:
        with pytest.raises(ConfigError, match="cannot read image"):
            batches.sample()


def test_training_on_unreadable_images_fails_with_one_line(unreadable_coco, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'model = "tiny"\ndata = "{unreadable_coco}"\nout = "{tmp_path / "run"}"\n'
                      "tokenizer_scenes = 30\nbatch_pairs = 1\n[[stages]]\nsteps = 2\n")
    done = subprocess.run([sys.executable, "-m", "samstream", "train", str(config)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "cannot read image" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run/model").exists()  # nothing exported from a failed run
