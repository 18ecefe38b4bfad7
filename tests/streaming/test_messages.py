import numpy as np
import pytest
from pydantic import ValidationError

from samstream.instances import Instances
from samstream.streaming.keys import StreamKeys
from samstream.streaming.messages import (
    FrameHeader,
    IngestEnded,
    StreamEnded,
    StreamSpec,
    check_instruction,
    frames_entry_adapter,
    results_entry_adapter,
)
from samstream.streaming.rle import decode_mask, to_frame_result


@pytest.mark.parametrize("bad", ["", "a b", "x{y}", "a:b", "-start", "x" * 129])
def test_bad_stream_ids_are_refused(bad):
    with pytest.raises(ValueError, match="invalid stream id"):
        StreamKeys(bad)


def test_keys_share_one_cluster_hash_tag():
    keys = StreamKeys("cam-1.front")
    tags = {k[k.index("{") + 1 : k.index("}")] for k in (keys.spec, keys.frames, keys.results, keys.lease, keys.state)}
    assert tags == {"cam-1.front"}


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_instruction_is_refused(text):
    with pytest.raises(ValueError, match="instruction is empty"):
        check_instruction(text)
    with pytest.raises(ValidationError):
        StreamSpec(stream="s", instructions=[text], width=4, height=4, fps=1)


def test_messages_round_trip_through_their_unions():
    header = FrameHeader(frame=3, pts=0.1, width=8, height=6, encoding="jpeg")
    assert frames_entry_adapter.validate_json(header.model_dump_json()) == header
    end = IngestEnded(frames=4, error="boom")
    assert frames_entry_adapter.validate_json(end.model_dump_json()) == end
    ended = StreamEnded(stream="s", frames=4)
    assert results_entry_adapter.validate_json(ended.model_dump_json()) == ended


def test_unknown_schema_version_is_rejected():
    with pytest.raises(ValidationError):
        frames_entry_adapter.validate_json('{"v": 2, "kind": "ingest-end", "frames": 1}')


def test_frame_result_carries_rle_masks_at_frame_size_and_tight_boxes():
    masks = np.zeros((2, 30, 40), dtype=bool)
    masks[0, 5:10, 7:20] = True
    masks[1, 0:30, 39] = True
    instances = Instances(masks=masks, scores=np.array([0.9, 0.4], np.float32), ids=np.array([3, 8]),
                          instructions=("a", "b"))
    result = to_frame_result("s", 7, 0.5, instances)
    line = result.to_jsonl()
    assert '"v"' not in line and '"kind"' not in line
    assert [i.bbox for i in result.instances] == [(7.0, 5.0, 13.0, 5.0), (39.0, 0.0, 1.0, 30.0)]
    for inst, mask in zip(result.instances, masks):
        assert inst.mask.size == (30, 40)
        assert np.array_equal(decode_mask(inst.mask), mask)


def test_instances_reject_misaligned_columns():
    with pytest.raises(ValueError, match="columns disagree"):
        Instances(masks=np.zeros((2, 4, 4), bool), scores=np.zeros(1, np.float32), ids=np.zeros(2, np.int64),
                  instructions=("a", "b"))
