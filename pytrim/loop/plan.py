"""The paper's plan, automated (`layers = "auto"`): Network Trimming starts with the layers of
highest mean APoZ and then trims their neighbours too. On the channel-dependency graph: the
first iteration trims the `auto_start` trimmable groups of highest mean APoZ; each later
iteration trims the groups the iteration before trimmed and at most `auto_grow` of the groups
adjacent to them in the graph (pytrim.graph.queries.neighbours), the highest mean APoZ first
(in a dense block every group touches every other: all of them at once is too far a step); a
group whose rule selects nothing drops out for good. Only groups whose outputs pass a ReLU
take part: APoZ is a property of ReLU outputs, and a group without one (a MobileNet v2 block's
linear projection) would count its negative half as zeros. Adjacency looks through such a
group: in MobileNet v2 a block's expansion touches only linear projections, and the groups
beyond them (the next blocks' expansions) are its neighbours. Every choice is recorded with
its reason (mean APoZ, rank, adjacency) for the report.
"""

from __future__ import annotations

from typing import Any


def candidates(number: int, previous: list[dict[str, Any]], mean_apoz: dict[str, float],
               touching: dict[str, set[str]], start: int, grow: int | None = None) -> dict[str, str]:  # fmt: skip
    """The groups iteration `number` offers to the rule, each with why (group -> reason):
    `previous` are the records of the iterations before it (the try each went on from); at most
    `grow` new neighbours join (None: all of them)."""
    ranked = sorted((name for name in touching if name in mean_apoz), key=lambda n: -mean_apoz[n])
    rank = {name: i + 1 for i, name in enumerate(ranked)}

    def apoz(name: str) -> str:
        return f"mean APoZ {mean_apoz[name]:.1%} (rank {rank[name]} of {len(ranked)})"

    trimmed = (previous[-1].get("plan") or {}).get("trimmed", []) if previous else []
    dropped = {name for record in previous for name in (record.get("plan") or {}).get("dropped", {})}
    if not trimmed:
        return {name: f"highest {apoz(name)}" for name in ranked[:start] if name not in dropped}
    found = {name: f"trimmed in iteration {number - 1}, {apoz(name)}" for name in trimmed if name not in dropped}
    joining: dict[str, str] = {}
    for name in trimmed:
        for other, via in sorted(adjacent(name, touching, rank).items()):
            if other not in found and other not in dropped and other not in joining:
                through = f" through {via} (no ReLU)" if via else ""
                joining[other] = f"adjacent to {name}{through} (trimmed in iteration {number - 1}), {apoz(other)}"
    newest = sorted(joining, key=lambda n: rank[n])[: len(joining) if grow is None else grow]
    found |= {name: joining[name] for name in newest}
    return dict(sorted(found.items(), key=lambda item: rank[item[0]]))


def newest(plan: dict[str, Any]) -> list[str]:
    """The groups an iteration's plan added (adjacent to the groups trimmed before it)."""
    return [name for name, why in (plan.get("why") or {}).items() if why.startswith("adjacent to")]


def adjacent(name: str, touching: dict[str, set[str]], measured: dict[str, int]) -> dict[str, str]:
    """The measured groups adjacent to `name`, directly ("") or through groups that are not
    measured (the first of them named): group -> via."""
    found: dict[str, str] = {}
    seen, frontier = {name}, [(other, "") for other in sorted(touching.get(name, ()))]
    while frontier:
        group, via = frontier.pop(0)
        if group in seen:
            continue
        seen.add(group)
        if group in measured:
            found[group] = via
        else:
            frontier += [(beyond, via or group) for beyond in sorted(touching.get(group, ())) if beyond not in seen]
    return found


def split(offered: dict[str, str], chosen: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The iteration's plan record: the groups trimmed (with why) and those whose rule selected
    nothing (dropped for good)."""
    trimmed = [name for name in offered if chosen[name]["kept"] < chosen[name]["width"]]
    dropped = {name: "the rule selects nothing" for name in offered if name not in trimmed}
    return {"trimmed": trimmed, "why": {name: offered[name] for name in trimmed}, "dropped": dropped}
