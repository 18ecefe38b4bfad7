"""The rank scorer of the query scores (samstream/model/rank_scores.py): identity when fresh, able to learn to pick
an instance by where it ranks among the likely ones, and read by each copy of the model from its own weights.
Training and loading it: test_extension_training.py."""

from __future__ import annotations

import copy

import torch

from samstream.model.rank_scores import RankScorer, query_geometry
from samstream.train.forward import cross_scores
from tests.model.extended_models import detect, tiny_model_with


def test_a_fresh_scorer_changes_nothing_and_leaves_the_other_weights_as_without_it():
    plain, ranked = tiny_model_with(box_prior=8), tiny_model_with(box_prior=8, rank_scorer=16)
    assert not hasattr(plain.detector_model.dot_product_scoring, "rank_scorer")
    plain_state = plain.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in ranked.state_dict().items() if "rank_scorer" not in k)
    assert torch.equal(detect(plain).pred_logits, detect(ranked).pred_logits)


def test_soft_ranks_order_the_likely_instances_and_ignore_the_unlikely():
    # three queries: left, middle, right; the middle one is unlikely, so the right one is after only the left one
    boxes = torch.tensor([[[0.1, 0.4, 0.2, 0.5], [0.45, 0.4, 0.55, 0.5], [0.8, 0.4, 0.9, 0.5]]])
    features = query_geometry(boxes, torch.tensor([[1.0, 0.0, 1.0]]))
    x_ranks = features[0, :, 6]
    assert x_ranks[0] < 0.01 and x_ranks[2] > 0.99
    assert abs(float(features[0, 0, 9]) - 1.0) < 1e-6  # the left query sees one likely other


def test_the_scorer_learns_to_pick_the_leftmost_or_largest_likely_instance():
    torch.manual_seed(0)
    scorer = RankScorer(hidden_size=8, width=16)
    optimizer = torch.optim.Adam(scorer.parameters(), lr=3e-3)
    words = torch.eye(8)[:2]  # instruction 0: "the leftmost one", 1: "the largest one"

    def batch(size: int = 64, queries: int = 8):
        low = torch.rand(size, queries, 2) * 0.7
        boxes = torch.cat([low, low + 0.05 + torch.rand(size, queries, 2) * 0.25], dim=-1)
        likely = torch.rand(size, queries) < 0.5
        likely[:, 0] = True
        base = torch.where(likely, 2.0, -4.0)  # SAM3's scores: which queries are the instruction's noun at all
        which = torch.randint(0, 2, (size,))
        key = torch.where(which[:, None] == 0, (boxes[..., 0] + boxes[..., 2]) / 2,
                          -(boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
        chosen = key.masked_fill(~likely, float("inf")).argmin(1)
        text = words[which][:, None].expand(size, 3, 8)
        return base, torch.randn(size, queries, 8) * 0.1, boxes, text, chosen

    for _ in range(400):
        base, states, boxes, text, chosen = batch()
        logits = scorer(base, states, boxes, text, None)
        loss = torch.nn.functional.cross_entropy(logits, chosen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    base, states, boxes, text, chosen = batch(512)
    with torch.no_grad():
        accuracy = (scorer(base, states, boxes, text, None).argmax(1) == chosen).float().mean()
    assert accuracy > 0.9  # SAM3's scores alone tie the likely queries: about 1 in 4.5


def test_a_deep_copy_reads_its_own_scorer_and_a_loss_scoring_alone_leaves_it_idle():
    model = tiny_model_with(box_prior=8, rank_scorer=16)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.detector_model.dot_product_scoring.rank_scorer.read_instruction.bias.fill_(1.0)
    assert not torch.allclose(detect(clone).pred_logits, detect(model).pred_logits)
    assert torch.equal(detect(copy.deepcopy(model)).pred_logits, detect(model).pred_logits)
    # the alignment loss calls the query-text scorer again outside a detector forward: nothing is kept for later
    scoring = model.detector_model.dot_product_scoring
    cross_scores(scoring, torch.randn(2, 2, 16, 128), torch.randn(2, 32, 128), None)
    assert scoring.rank_scorer_inputs is None

