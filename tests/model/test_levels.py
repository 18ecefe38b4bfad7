import pytest

from samstream.model.levels import classify_level, resolve_level


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("forklift", "concept"),
        ("soccer player", "concept"),
        ("yellow school bus", "concept"),
        ("tin can", "concept"),
        ("the bird", "concept"),
        ("a red car", "concept"),
        ("the person on the left", "simple"),
        ("the person in the red jacket on the left", "simple"),
        ("the two largest boxes", "simple"),
        ("person wearing a hat", "simple"),
        ("the soccer player on the far right, wearing a blue jersey", "simple"),
        ("whoever is about to be hit by the door", "complex"),
        ("something to sit on", "complex"),
        ("who is most likely to get to the ball?", "complex"),
        ("the shape that could roll", "complex"),
        ("the odd one out", "complex"),
        ("What can be used for cutting", "complex"),
    ],
)
def test_classify_level(text, level):
    assert classify_level(text) == level


def test_resolve_level_takes_the_callers_word_or_classifies():
    assert resolve_level("forklift", "complex") == "complex"
    assert resolve_level("the red car on the left", None) == "simple"
    assert resolve_level("the red car on the left", "auto") == "simple"
    with pytest.raises(ValueError, match="unknown instruction level 'hard'"):
        resolve_level("x", "hard")
