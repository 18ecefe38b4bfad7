"""`samstream synth`: a seeded dataset of world videos (YouTube-VIS) and/or images (COCO)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from samstream.data.formats import CATEGORIES, image_record, video_record, write_json
from samstream.data.world import make_scene
from samstream.errors import ConfigError

IMAGE_SEED_OFFSET = 1_000_000  # image scenes draw from other seeds than video scenes


def synthesize(out: Path, videos: int = 0, frames: int = 30, images: int = 0, width: int = 320, height: int = 240,
               seed: int = 0, as_images: bool = False, min_objects: int = 2, max_objects: int = 6,
               progress: bool = True) -> dict[str, Path]:
    """Write `videos` videos of `frames` frames and/or `images` images under `out`. Returns the annotation
    files written ({"videos": .../annotations.json, "images": .../annotations.json})."""
    if videos < 0 or images < 0 or videos + images == 0:
        raise ConfigError("nothing to make: give --videos N and/or --images N (N > 0)")
    if frames < 1 or width < 16 or height < 16:
        raise ConfigError(f"need frames >= 1 and a frame of at least 16x16, got {frames} frames of {width}x{height}")
    if width % 2 or height % 2:
        raise ConfigError(f"width and height must be even for H.264 video, got {width}x{height}")
    if not 1 <= min_objects <= max_objects:
        raise ConfigError(f"need 1 <= min objects <= max objects, got {min_objects}..{max_objects}")
    out = Path(out)
    written: dict[str, Path] = {}
    info = {"generator": "samstream synth", "seed": seed, "width": width, "height": height}
    if videos:
        folder = out / "videos"
        if folder.exists():
            shutil.rmtree(folder)  # a re-run replaces the set; nothing stale stays beside it
        entries, annotations = [], []
        for i in tqdm(range(videos), desc="videos", unit="video", disable=not progress):
            scene = make_scene(seed + i, frames, min_objects, max_objects, scene_id=i + 1)
            video, anns = video_record(scene, width, height, as_images, out)
            entries.append(video)
            annotations.extend(anns)
        data = {"info": {**info, "frames": frames}, "videos": entries, "categories": CATEGORIES,
                "annotations": annotations}
        written["videos"] = out / "videos.json"
        write_json(written["videos"], data)
    if images:
        entries, annotations = [], []
        for i in tqdm(range(images), desc="images", unit="image", disable=not progress):
            scene = make_scene(IMAGE_SEED_OFFSET + seed + i, 1, min_objects, max_objects, scene_id=i + 1)
            image, anns = image_record(scene, width, height, out)
            entries.append(image)
            annotations.extend(anns)
        data = {"info": info, "images": entries, "categories": CATEGORIES, "annotations": annotations}
        written["images"] = out / "images.json"
        write_json(written["images"], data)
    return written


# The fixed evaluation set (`samstream synth --preset eval`): held-out scenes and held-out instruction templates,
# square frames (the small model's input is square), a few MB. CI and the model card score on it.
EVAL_PRESET = dict(videos=30, frames=40, images=200, width=224, height=224, seed=500, min_objects=1, max_objects=6)


def synthesize_eval_set(out: Path, progress: bool = True) -> Path:
    """Write the fixed evaluation set and its instruction records (held-out templates) under `out`."""
    from samstream.data.engine import instruction_set, write_instructions
    from samstream.data.formats import load_dataset

    out = Path(out)
    written = synthesize(out, progress=progress, **EVAL_PRESET)
    for kind, path in written.items():
        records = instruction_set(load_dataset(path), split="heldout", per_level=2, negatives=1, seed=0)
        write_instructions(out / f"{kind}.instructions.json", records, str(path), "heldout", 0)
    return out
