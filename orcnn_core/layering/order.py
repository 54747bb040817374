"""A front-to-back order from weighted pairwise decisions: minimum-weight feedback arc set.

Input: ``weights[i, j] > 0`` is the evidence that i is in front of j (at most one direction per
pair). The decisions are acyclic unless several pairs disagree (A before B before C before A);
then some must be overruled, and the order overrules the least evidence in total. Cycles live in
strongly connected components (SCCs), so the problem splits per SCC:

* an SCC of up to ``exact_limit`` instances is solved exactly, by dynamic programming over the
  subsets already placed in front (``2^m`` states, vectorised per subset size);
* a larger one (rare: it takes a dozen mutually inconsistent overlaps) gets the greedy order of
  Eades, Lin and Smyth (1993) with weights: repeatedly place a source (nothing left in front of it)
  at the front, a sink at the back, else the instance whose outgoing minus incoming evidence is
  largest at the front.

Instances are then ordered by Kahn's algorithm over the kept decisions, ties to the higher priority.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np


def reachability(adjacency: np.ndarray) -> np.ndarray:
    """Reflexive transitive closure of a bool (K, K) adjacency matrix (repeated squaring)."""
    reach = np.asarray(adjacency, dtype=bool) | np.eye(adjacency.shape[0], dtype=bool)
    while True:
        step = (reach.astype(np.int32) @ reach.astype(np.int32)) > 0
        if np.array_equal(step, reach):
            return reach
        reach = step


def strongly_connected_components(adjacency: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the SCCs with more than one member (the only places a cycle can be)."""
    reach = reachability(adjacency)
    mutual = reach & reach.T
    seen = np.zeros(adjacency.shape[0], dtype=bool)
    components = []
    for k in range(adjacency.shape[0]):
        if seen[k]:
            continue
        members = np.flatnonzero(mutual[k])
        seen[members] = True
        if members.size > 1:
            components.append(members)
    return components


def exact_order(weights: np.ndarray) -> list[int]:
    """Order of m nodes minimising the weight of reversed decisions, by DP over placed subsets.

    ``cost[S, v]`` = evidence that v is in front of members of S: what placing v right behind the
    set S overrules. ``best[S]`` = least total overruled to place S in front.
    """
    m = weights.shape[0]
    subsets = np.arange(1 << m)
    bits = (subsets[:, None] >> np.arange(m)) & 1
    cost = bits @ weights.T.astype(np.float64)          # (2^m, m): sum over u in S of weights[v, u]
    popcount = bits.sum(axis=1)
    best = np.full(1 << m, np.inf)
    best[0] = 0.0
    last = np.zeros(1 << m, dtype=np.int64)
    for size in range(1, m + 1):
        states = subsets[popcount == size]
        candidates = np.full((states.size, m), np.inf)
        for v in range(m):
            has = (states >> v) & 1 == 1
            before = states[has] ^ (1 << v)
            candidates[has, v] = best[before] + cost[before, v]
        choice = np.argmin(candidates, axis=1)          # ties: the lowest index goes last
        best[states] = candidates[np.arange(states.size), choice]
        last[states] = choice
    order, state = [], (1 << m) - 1
    while state:
        v = int(last[state])
        order.append(v)
        state ^= 1 << v
    return order[::-1]


def greedy_order(weights: np.ndarray) -> list[int]:
    """Weighted Eades-Lin-Smyth order of m nodes (see the module docstring)."""
    remaining = list(range(weights.shape[0]))
    front, back = [], []
    while remaining:
        sub = weights[np.ix_(remaining, remaining)]
        incoming = (sub > 0).sum(axis=0)
        outgoing = (sub > 0).sum(axis=1)
        sinks = [remaining[k] for k in np.flatnonzero(outgoing == 0)]
        if sinks:
            back.extend(sorted(sinks, reverse=True))
            remaining = [k for k in remaining if k not in sinks]
            continue
        sources = [remaining[k] for k in np.flatnonzero(incoming == 0)]
        if sources:
            front.extend(sorted(sources))
            remaining = [k for k in remaining if k not in sources]
            continue
        balance = sub.sum(axis=1) - sub.sum(axis=0)
        pick = remaining[int(np.argmax(balance))]
        front.append(pick)
        remaining.remove(pick)
    return front + back[::-1]


def front_to_back(weights: np.ndarray, priority: Sequence[float], exact_limit: int = 12
                  ) -> tuple[list[int], np.ndarray, int]:
    """(order front to back, kept (K, K) bool decisions, number of overruled decisions).

    ``priority`` breaks ties between instances no kept decision orders (higher first, then lower
    index).
    """
    weights = np.asarray(weights, dtype=np.float64)
    kept = weights > 0
    overruled = 0
    for members in strongly_connected_components(kept):
        sub = weights[np.ix_(members, members)]
        local = exact_order(sub) if members.size <= exact_limit else greedy_order(sub)
        rank = np.empty(members.size, dtype=np.int64)
        rank[local] = np.arange(members.size)
        backward = (sub > 0) & (rank[:, None] > rank[None, :])
        overruled += int(backward.sum())
        kept[np.ix_(members, members)] &= ~backward
    # Kahn's algorithm: an instance is placed once everything decided to be in front of it is.
    priority = np.asarray(priority, dtype=np.float64)
    waiting = kept.sum(axis=0)
    heap = [(-priority[k], k) for k in np.flatnonzero(waiting == 0)]
    heapq.heapify(heap)
    order = []
    while heap:
        _, k = heapq.heappop(heap)
        order.append(int(k))
        for behind in np.flatnonzero(kept[k]):
            waiting[behind] -= 1
            if waiting[behind] == 0:
                heapq.heappush(heap, (-priority[behind], int(behind)))
    return order, kept, overruled


def depth_layers(front_of: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """(K,) 0 for instances nothing is in front of, else 1 + the deepest one in front (``order`` is
    a topological order of the acyclic ``front_of``)."""
    layer = np.zeros(front_of.shape[0], dtype=np.int64)
    for k in order:
        above = np.flatnonzero(front_of[:, k])
        if above.size:
            layer[k] = int(layer[above].max()) + 1
    return layer
