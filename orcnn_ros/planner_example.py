"""How a grasp planner can use an ``AmodalInstanceArray`` (the example in docs/ros.md, tested).

Works on any message flavour: rclpy in a subscriber callback, rosbags when reading a bag.
"""

from __future__ import annotations

from typing import Any, Optional


def objects_to_remove_first(msg: Any, target_id: int) -> list[int]:
    """Ids of every object hiding ``target_id``, directly or through others, in pick order."""
    blockers: set[int] = set()
    stack = [int(target_id)]
    while stack:
        for occluder in msg.instances[stack.pop()].occluder_ids:
            if int(occluder) not in blockers and int(occluder) != target_id:
                blockers.add(int(occluder))
                stack.append(int(occluder))
    return [int(k) for k in msg.pick_order if int(k) in blockers]


def next_grasp(msg: Any, min_score: float = 0.5, max_occlusion: float = 0.3,
               allow_truncated: bool = False) -> Optional[int]:
    """First instance in pick order that is confident, mostly visible and hidden by no one."""
    for k in msg.pick_order:
        inst = msg.instances[int(k)]
        if inst.score < min_score or inst.occlusion_rate > max_occlusion:
            continue
        if inst.layer > 0 or (inst.truncated and not allow_truncated):  # layer 0: nothing occludes it
            continue
        return int(k)
    return None


def grasp_target(msg: Any, k: int) -> Optional[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """(position, approach direction) of instance ``k`` in metres in the camera's optical frame: its
    visible centroid, and the direction a gripper moves in (into the surface, -surface_normal);
    None when the instance has no 3D (no depth, or too few valid depth pixels on it)."""
    inst = msg.instances[int(k)]
    if not inst.has_3d:
        return None
    c, n = inst.visible_centroid, inst.surface_normal
    return (float(c.x), float(c.y), float(c.z)), (-float(n.x), -float(n.y), -float(n.z))
