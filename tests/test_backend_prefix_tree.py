"""The scoring plan alone: every read position sees exactly its own sequence, each read once."""

from __future__ import annotations

import random

import pytest

from harness.backends.prefix_tree import ScoreRequest, Segment, Stage, plan_scoring


def _random_requests(seed: int, n: int = 40) -> list[ScoreRequest]:
    rng = random.Random(seed)
    shared = [rng.randrange(50) for _ in range(rng.randint(0, 30))]
    questions = [[rng.randrange(50) for _ in range(rng.randint(1, 12))] for _ in range(6)]
    requests = []
    for _ in range(n):
        tokens = (shared if rng.random() < 0.8 else []) + rng.choice(questions)
        tokens = tokens + [rng.randrange(50) for _ in range(rng.randint(0, 10))]
        if not tokens:
            tokens = [1]
        n_targets = rng.randint(1, min(3, len(tokens)))
        first = len(tokens) - n_targets
        requests.append(
            ScoreRequest(tuple(tokens), first, tuple(rng.randrange(50) for _ in range(n_targets)))
        )
    requests += requests[:5]  # identical requests
    return requests


def _visible_sequences(plan):
    """For every scored slot: (trie node, the token sequence its attention sees, its position)."""
    out = []

    def walk(stage: Stage, context: list[int]):
        chain_tokens = context + stage.chain.tokens
        for i, scored in enumerate(stage.chain.scored):
            if scored:
                out.append(
                    (
                        stage.chain.nodes[i],
                        context + stage.chain.tokens[: i + 1],
                        stage.chain.positions[i],
                    )
                )
        for row in stage.rows:
            for q in range(len(row)):
                if not row.scored[q]:
                    continue
                seen = [row.tokens[k] for k in range(q + 1) if q < row.ends[k]]
                out.append((row.nodes[q], chain_tokens + seen, row.positions[q]))
        for child in stage.children:
            walk(child, chain_tokens)

    walk(plan.top, [])
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("row_tokens", [8, 24, 512])
def test_each_read_sees_exactly_its_prefix(seed, row_tokens):
    requests = _random_requests(seed)
    plan = plan_scoring(requests, row_tokens=row_tokens, min_stage_tokens=6)
    seen = _visible_sequences(plan)
    by_node = {}
    for node, sequence, position in seen:
        assert node not in by_node, "a position's log-probs are read twice"
        assert position == len(sequence) - 1
        by_node[node] = sequence
    reads = 0
    for node, readers in plan.readers.items():
        for req, k in readers:
            request = requests[req]
            assert by_node[node] == list(request.tokens[: request.first_scored + k + 1])
            reads += 1
    assert reads == sum(len(r.targets) for r in requests)
    assert plan.computed_tokens >= plan.num_nodes


def test_shared_prefix_and_identical_contexts_are_computed_once():
    meta = tuple(range(100, 160))
    requests = []
    for q in range(5):
        context = meta + (q, q, q)
        for candidate in range(3):
            tokens = context + (200 + candidate,) * 4
            requests += [
                ScoreRequest(tokens, len(tokens) - 1, (7,)),
                ScoreRequest(tokens, len(tokens) - 1, (8,)),
            ]
    plan = plan_scoring(requests, row_tokens=512)
    assert plan.top.chain.tokens == list(meta)
    assert plan.num_nodes == 60 + 5 * (3 + 3 * 4)
    assert plan.computed_tokens == plan.num_nodes
    assert len(plan.readers) == 15  # " true"/" false" share one position per candidate
    assert plan.num_request_tokens == 30 * (60 + 3 + 4)


def test_long_shared_chains_become_stages_not_repeats():
    rng = random.Random(0)
    dialog = tuple(rng.randrange(1000) for _ in range(300))
    requests = [ScoreRequest(dialog + (1, o, 2), 302, (9,)) for o in range(4)] + [
        ScoreRequest((5,) + tuple(rng.randrange(1000) for _ in range(20)), 20, (3,))
    ]
    plan = plan_scoring(requests, row_tokens=64, min_stage_tokens=32)
    stages = list(plan.top.walk())
    assert any(len(s.chain) >= 300 for s in stages)
    assert plan.computed_tokens == plan.num_nodes


def test_segment_slice_keeps_chain_visibility():
    segment = Segment([1, 2, 3], [0, 1, 2], [3, 3, 3], [10, 11, 12], [False, True, True])
    tail = segment.slice(1)
    assert tail.tokens == [2, 3] and tail.positions == [1, 2] and tail.ends == [2, 2]
    assert tail.num_scored == 2


def test_invalid_request_is_rejected():
    with pytest.raises(ValueError):
        ScoreRequest((1, 2, 3), 1, (4,))
