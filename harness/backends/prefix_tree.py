"""Plan log-likelihood scoring over a token trie so that every distinct token is computed once.

A position's logits depend only on the tokens up to it, so requests that share a prefix (the
meta prompt; the question under each candidate answer; the identical contexts of " true" and
" false") share the work for it. The plan has:

- a *top chain*: the tokens every request starts with, run once (batch 1); its KV cache is
  then shared by every row (likewise the long chains of *child stages*, see ``Stage``);
- *rows*: the rest of the trie, cut into subtrees, each laid out in depth-first order and
  packed into rows of about ``row_tokens`` tokens. A token sees the root chain and its own
  ancestors in the row (``ends``: a token is visible to the row slots ``[index, ends[index])``,
  exactly its subtree), so one row holds many sequences without them seeing each other;
- for every scored position, which requests read which target token from its log-probs.

Pure Python and independent of the model, so it is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoreRequest:
    """One log-likelihood request in model-input form.

    ``tokens`` is the input (context + continuation without its last token, as lm-eval's
    ``hf`` feeds it); positions ``first_scored .. len(tokens)-1`` predict ``targets`` in order.
    """

    tokens: tuple[int, ...]
    first_scored: int
    targets: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.tokens) - self.first_scored != len(self.targets) or self.first_scored < 0:
            raise ValueError("targets must cover positions first_scored..len(tokens)-1")


@dataclass
class Segment:
    """Tokens laid out together (the root chain, or one row) with what to read off them."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # position in the token's own sequence
    ends: list[int] = field(default_factory=list)  # slot i is visible to slots [i, ends[i])
    nodes: list[int] = field(default_factory=list)  # trie node of each slot
    scored: list[bool] = field(default_factory=list)  # read this slot's log-probs

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_scored(self) -> int:
        return sum(self.scored)

    def slice(self, start: int) -> Segment:
        """The slots from ``start`` on (for chains, whose slots all see each other)."""
        n = len(self) - start
        return Segment(
            self.tokens[start:],
            self.positions[start:],
            [n] * n,
            self.nodes[start:],
            self.scored[start:],
        )


@dataclass
class Stage:
    """A chain run once (batch 1) on top of its parent stage's cache, and what runs on top of it.

    The top stage's chain is the prefix of every request (the meta prompt). A subtree too big
    for a row whose shared chain is long becomes a child stage instead of having that chain
    repeated in every row that holds part of it.
    """

    chain: Segment
    rows: list[Segment]
    children: list[Stage]
    context_len: int  # tokens in the cache below this stage's chain (its parents' chains)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class ScoringPlan:
    top: Stage
    # trie node -> [(request index, target index)] reading that node's log-probs
    readers: dict[int, list[tuple[int, int]]]
    num_nodes: int  # distinct tokens: the least any exact method must run through the model
    num_request_tokens: int  # tokens a request-by-request method runs

    @property
    def computed_tokens(self) -> int:
        return sum(len(s.chain) + sum(len(r) for r in s.rows) for s in self.top.walk())

    @property
    def num_rows(self) -> int:
        return sum(len(s.rows) for s in self.top.walk())


class _Trie:
    """Token trie with integer node ids; parents always have smaller ids than children."""

    def __init__(self) -> None:
        self.child: dict[tuple[int, int], int] = {}  # (parent id, token) -> node id; root is -1
        self.parent: list[int] = []
        self.token: list[int] = []
        self.depth: list[int] = []

    def insert(self, tokens: tuple[int, ...]) -> list[int]:
        path = []
        node = -1
        for depth, token in enumerate(tokens):
            key = (node, token)
            nxt = self.child.get(key)
            if nxt is None:
                nxt = len(self.parent)
                self.child[key] = nxt
                self.parent.append(node)
                self.token.append(token)
                self.depth.append(depth)
            path.append(nxt)
            node = nxt
        return path


def plan_scoring(
    requests: list[ScoreRequest], row_tokens: int = 512, min_stage_tokens: int = 64
) -> ScoringPlan:
    """Deduplicate ``requests`` into a trie and lay it out as stages of chains and packed rows."""
    trie = _Trie()
    readers: dict[int, list[tuple[int, int]]] = {}
    for index, request in enumerate(requests):
        path = trie.insert(request.tokens)
        for k in range(len(request.targets)):
            readers.setdefault(path[request.first_scored + k], []).append((index, k))
    count = len(trie.parent)
    children: list[list[int]] = [[] for _ in range(count)]
    top: list[int] = []
    for node in range(count):
        (top if trie.parent[node] < 0 else children[trie.parent[node]]).append(node)
    size = [1] * count
    for node in range(count - 1, -1, -1):
        if trie.parent[node] >= 0:
            size[trie.parent[node]] += size[node]
    builder = _StageBuilder(trie, children, size, readers, row_tokens, min_stage_tokens)
    # The top chain: every request's common prefix, followed while the trie does not branch.
    chain: list[int] = []
    frontier = top
    while len(frontier) == 1:
        chain.append(frontier[0])
        frontier = children[frontier[0]]
    return ScoringPlan(
        top=builder.stage(chain, frontier, context_len=0),
        readers=readers,
        num_nodes=count,
        num_request_tokens=sum(len(r.tokens) for r in requests),
    )


# A unit: a path of (repeated) ancestor nodes and whole subtrees hanging below its last node.
_Unit = tuple[list[int], list[int]]


class _StageBuilder:
    def __init__(self, trie, children, size, readers, capacity: int, min_stage_tokens: int):
        self.trie, self.children, self.size, self.readers = trie, children, size, readers
        self.capacity, self.min_stage_tokens = capacity, min_stage_tokens
        self.assigned: set[int] = set()  # nodes whose log-probs are already read somewhere

    def stage(self, chain: list[int], frontier: list[int], context_len: int) -> Stage:
        segment = Segment()
        for node in chain:
            self._append(segment, node, end=0)
        segment.ends = [len(segment)] * len(segment)
        units, substages = self._units(frontier, context_len + len(chain))
        rows = self._pack_rows(units)
        return Stage(segment, rows, substages, context_len)

    def _units(self, frontier: list[int], context_len: int) -> tuple[list[_Unit], list[Stage]]:
        """Cut the subtrees below a chain into units of at most ``capacity`` tokens where possible.

        A subtree that does not fit is split at its first branching node. The chain down to it
        is repeated in every unit holding part of its children when short, or becomes a child
        stage (run once, batch 1) when at least ``min_stage_tokens`` long.
        """
        size, children = self.size, self.children
        units: list[_Unit] = []
        stages: list[Stage] = []
        work: list[tuple[list[int], list[int]]] = [([], frontier)]
        while work:
            path, siblings = work.pop()
            room = self.capacity - len(path)
            fitting = [n for n in siblings if size[n] <= room]
            for group in _first_fit_decreasing(fitting, room, size):
                units.append((path, group))
            for node in siblings:
                if size[node] <= room:
                    continue
                chain = [node]
                while len(children[chain[-1]]) == 1:
                    chain.append(children[chain[-1]][0])
                below = children[chain[-1]]
                if not below:  # one sequence longer than a row: it gets a row of its own
                    units.append((path + chain, []))
                elif len(path) + len(chain) >= self.min_stage_tokens:
                    stages.append(self.stage(path + chain, below, context_len))
                else:
                    work.append((path + chain, below))
        return units, stages

    def _pack_rows(self, units: list[_Unit]) -> list[Segment]:
        size, children = self.size, self.children

        def unit_size(unit: _Unit) -> int:
            return len(unit[0]) + sum(size[n] for n in unit[1])

        rows: list[Segment] = []
        room: list[int] = []
        for unit in sorted(units, key=lambda u: -unit_size(u)):
            need = unit_size(unit)
            r = next((i for i, free in enumerate(room) if need <= free), len(rows))
            if r == len(rows):
                rows.append(Segment())
                room.append(self.capacity)
            room[r] -= need
            row = rows[r]
            unit_end = len(row) + need
            path, subtrees = unit
            for node in path:
                self._append(row, node, unit_end)
            for subtree in subtrees:
                stack = [subtree]
                while stack:
                    node = stack.pop()
                    self._append(row, node, len(row) + size[node])
                    stack.extend(reversed(children[node]))
        return rows

    def _append(self, segment: Segment, node: int, end: int) -> None:
        segment.tokens.append(self.trie.token[node])
        segment.positions.append(self.trie.depth[node])
        segment.ends.append(end)
        segment.nodes.append(node)
        read = node in self.readers and node not in self.assigned
        if read:
            self.assigned.add(node)
        segment.scored.append(read)


def _first_fit_decreasing(items: list[int], capacity: int, size) -> list[list[int]]:
    bins: list[list[int]] = []
    room: list[int] = []
    for item in sorted(items, key=lambda n: -size[n]):
        b = next((i for i, free in enumerate(room) if size[item] <= free), len(bins))
        if b == len(bins):
            bins.append([])
            room.append(capacity)
        bins[b].append(item)
        room[b] -= size[item]
    return bins
