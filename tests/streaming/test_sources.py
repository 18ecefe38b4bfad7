import numpy as np
import pytest

from samstream.errors import SourceError
from samstream.streaming.codec import decode_frame, encode_frame
from samstream.streaming.sources import VideoFileSource
from tests.media import truncate, write_moving_squares


def test_real_clip_decodes_every_frame_in_order(realshort):
    source = VideoFileSource(realshort)
    assert (source.info.width, source.info.height, source.info.frames) == (320, 240, 36)
    frames = list(source)
    assert [f.index for f in frames] == list(range(36))
    assert all(f.rgb.shape == (240, 320, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))


def test_max_frames_stops_early_without_error(realshort):
    assert len(list(VideoFileSource(realshort, max_frames=5))) == 5


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.mp4: no such file"):
        VideoFileSource(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(SourceError, match=r"notes\.mp4: not a readable video"):
        VideoFileSource(bad)


def test_truncated_file_names_the_frame_where_it_broke(tmp_path):
    clip = write_moving_squares(tmp_path / "full.mp4", frames=24)
    cut = truncate(clip, tmp_path / "cut.mp4", 0.6)
    got = []
    with pytest.raises(SourceError, match=r"cut\.mp4: truncated: decoding stopped at frame (\d+) of 24") as info:
        for frame in VideoFileSource(cut):
            got.append(frame.index)
    assert 0 < len(got) < 24
    assert f"frame {len(got)} of 24" in str(info.value)


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_codec_round_trip(realshort, encoding):
    rgb = next(iter(VideoFileSource(realshort))).rgb
    back = decode_frame(encode_frame(rgb, encoding), encoding, 240, 320)
    tolerance = 0 if encoding == "raw" else 12
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() <= tolerance
    with pytest.raises(ValueError):
        decode_frame(b"garbage", encoding, 240, 320)
