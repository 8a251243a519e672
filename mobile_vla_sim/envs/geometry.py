"""2-D planning around axis-aligned boxes on a given side: the expert's path and the SPL reference length.

The shortest path around convex obstacles touches their (inflated) corners, so a visibility graph over
the corners on the instructed side, searched with Dijkstra, gives it exactly.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

SIDE_SIGN = {"left": 1.0, "right": -1.0}
_EPS = 1e-6


@dataclass(frozen=True)
class Rect:
    """Axis-aligned rectangle: centre and half extents (m)."""

    cx: float
    cy: float
    hx: float
    hy: float

    def inflated(self, margin: float) -> "Rect":
        return Rect(self.cx, self.cy, self.hx + margin, self.hy + margin)

    def contains(self, p) -> bool:
        """Strictly inside (the boundary is free space)."""
        return abs(p[0] - self.cx) < self.hx - _EPS and abs(p[1] - self.cy) < self.hy - _EPS

    def clearance(self, p) -> float:
        """Chebyshev distance from `p` to the rectangle edge, negative inside; what inflation `p` tolerates."""
        return max(abs(p[0] - self.cx) - self.hx, abs(p[1] - self.cy) - self.hy)


def segment_hits(p, q, r: Rect) -> bool:
    """Whether segment p-q passes through the open interior of `r` (Liang-Barsky clipping).

    Plain-float arithmetic: this runs a few hundred times per env step, where numpy scalars would dominate.
    """
    t0, t1 = 0.0, 1.0
    for p_k, q_k, c, h in ((p[0], q[0], r.cx, r.hx), (p[1], q[1], r.cy, r.hy)):
        lo, hi, d = c - h + _EPS, c + h - _EPS, q_k - p_k
        if abs(d) < 1e-12:
            if not lo < p_k < hi:
                return False
            continue
        a, b = (lo - p_k) / d, (hi - p_k) / d
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
        if t0 >= t1:
            return False
    return True


def _y_at(p, q, x: float) -> float:
    """y of segment p-q where it meets the line x = const."""
    return p[1] + (x - p[0]) / (q[0] - p[0]) * (q[1] - p[1])


def passes_on_side(p, q, r: Rect, sign: float) -> bool:
    """False if the segment crosses the box's centre line x = cx on the other side than `sign` (+1 left)."""
    if (p[0] - r.cx) * (q[0] - r.cx) > 0 or abs(q[0] - p[0]) < 1e-12:
        return True
    return sign * (_y_at(p, q, r.cx) - r.cy) > 0


def crossing_side(p, q, box_x: float, box_y: float) -> str | None:
    """Side ('left' = +y, or 'right') on which a forward move p -> q crosses a box's centre line x = box_x, or None
    if this move does not cross it. The one definition of "went around the box on the left/right"."""
    if not p[0] < box_x <= q[0]:
        return None
    return "left" if _y_at(p, q, box_x) > box_y else "right"


def plan_path(start, goal, rects: list[Rect], side: str | None) -> list[np.ndarray]:
    """Shortest polyline start -> goal that avoids the (already inflated) rects and passes each on `side` (None:
    on either side).

    Returns the waypoints after `start`, ending with `goal`. A rect that contains `start` is shrunk to
    put `start` on its edge, so a robot that drifted inside its safety margin still gets a way out.
    """
    signs = (1.0, -1.0) if side is None else (SIDE_SIGN[side],)
    start, goal = (float(start[0]), float(start[1])), (float(goal[0]), float(goal[1]))
    rects = [Rect(r.cx, r.cy, r.hx - m, r.hy - m) if (m := max(0.0, -r.clearance(start)) + 1e-4) > 1e-4 else r
             for r in rects]
    nodes = [start, goal] + [(r.cx + dx, r.cy + sign * (r.hy + 1e-4))
                             for r in rects for sign in signs for dx in (-r.hx - 1e-4, r.hx + 1e-4)]
    nodes = nodes[:2] + [n for n in nodes[2:] if not any(r.contains(n) for r in rects)]

    def free(i: int, j: int) -> bool:
        return all(not segment_hits(nodes[i], nodes[j], r)
                   and (side is None or passes_on_side(nodes[i], nodes[j], r, signs[0])) for r in rects)

    dist, prev, heap = {0: 0.0}, {}, [(0.0, 0)]
    while heap:
        d, i = heapq.heappop(heap)
        if i == 1:
            break
        if d > dist.get(i, np.inf):
            continue
        for j in range(1, len(nodes)):
            if j != i and free(i, j):
                nd = d + math.dist(nodes[i], nodes[j])
                if nd < dist.get(j, np.inf):
                    dist[j], prev[j] = nd, i
                    heapq.heappush(heap, (nd, j))
    if 1 not in prev:
        return [np.array(goal)]
    path, i = [], 1
    while i != 0:
        path.append(np.array(nodes[i]))
        i = prev[i]
    return path[::-1]


def polyline_length(start, waypoints: list[np.ndarray]) -> float:
    """Length of start -> waypoints[0] -> ... (m)."""
    pts = np.vstack([np.asarray(start, dtype=float)[None], *[w[None] for w in waypoints]])
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


def point_along(start, waypoints: list[np.ndarray], distance: float) -> np.ndarray:
    """The point `distance` metres along the polyline (its end if shorter): a pure-pursuit target."""
    p = np.asarray(start, dtype=float)
    for w in waypoints:
        seg = float(np.linalg.norm(w - p))
        if seg >= distance:
            return p + (w - p) * (distance / max(seg, 1e-9))
        distance -= seg
        p = w
    return p
