"""Several runs' leaderboards as one: a column group per known reward (VADER, a planted lexicon, ...), each
method's tuned-model scores beside the same method on the untuned base model.

A reward the base model cannot know (a planted lexicon) is the strongest test of an elicitation method: on
VADER the base model already ranks sentiment, so only a tuned-over-base gap is evidence; on a planted reward
the base model should score near zero. Putting both rewards side by side shows which methods read what
tuning wrote rather than what pretraining knew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from irmscope.errors import IrmscopeError


def merge_leaderboards(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Join the leaderboards of ``runs`` (each a ``results.json``) by method name.

    Each run's column is named after its known reward (``results["subject"]["reward"]``), with a counter
    when two runs share a reward. A method missing from a run (say, the IRM lexicon rows on a reward that
    is not a lexicon) has ``None`` in that column. Rows keep the first run's method order, then new ones.
    """
    if not runs:
        raise IrmscopeError("no runs to compare; pass at least one run folder")
    columns: list[str] = []
    boards: dict[str, dict[str, Any]] = {}
    for results in runs:
        name, n = results["subject"]["reward"], 2
        column = name
        while column in boards:
            column, n = f"{name} ({n})", n + 1
        columns.append(column)
        boards[column] = results
    methods: dict[str, dict[str, Any]] = {}
    for column, results in boards.items():
        for row in results["leaderboard"]["rows"]:
            entry = methods.setdefault(
                row["method"],
                {"method": row["method"], "supervised": row["supervised"], "description": row["description"]},
            )
            entry.setdefault("scores", {})[column] = {"tuned": row["tuned"], "base": row["base"]}
    for entry in methods.values():
        entry["scores"] = {column: entry["scores"].get(column) for column in columns}
    return {
        "rewards": columns,
        "runs": {
            column: {
                "reward": results["subject"]["reward"],
                "reward_description": results["subject"].get("reward_description", ""),
                "tuned": results["subject"]["tuned"],
                "base": results["subject"]["base"],
                "n_prompts": results["leaderboard"]["n_prompts"],
                "reward_gain": (results.get("evaluation") or {}).get("reward_gain"),
            }
            for column, results in boards.items()
        },
        "rows": list(methods.values()),
    }
