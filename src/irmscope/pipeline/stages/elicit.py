"""Stage ``elicit``: the paper's lexicon regression (Tables 3, 4, 10, 11) and the token-level policy shift,
each scored against the known lexicon for the tuned model and the base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import Regression
from irmscope.data.samples import first_of_each_policy
from irmscope.elicit.policy_shift import ShiftLevels
from irmscope.elicit.reward_study import elicit_lexicon_reward
from irmscope.io import write_json
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register


@register
class Elicit(Stage):
    name = "elicit"
    # 2: permutation nulls, paired tuned-minus-base gaps, held-out words split by lemma; 3: Snowball lemma;
    # 4: the policy shift from the read-samples stage's levels (prompt and completion tokenised apart)
    version = 4
    needs = ("saes", "evaluate", "read-samples")
    result_key = "elicitation"
    requires = ("tuned", "lexicon")
    config_sections = ("elicit", "reward")
    reads = ("saes-tuned", "saes-base", "evaluate", "read-samples")

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        result = elicit_lexicon_reward(
            ctx.tuned,
            ctx.base,
            tuned_saes=ctx.saes("tuned"),
            base_saes=ctx.saes("base"),
            lexicon=ctx.lexicon,
            texts=list(ctx.reviews("contexts")["text"]),
            shift_levels=ShiftLevels.load(ctx.finished["read-samples"].dir).of_texts(
                first_of_each_policy(len(ctx.samples.prompts), ctx.config.elicit.n_shift_texts)
            ),
            settings=ctx.config.elicit,
            seed=ctx.seed,
            progress=ctx.progress,
        )
        for label in ("tuned", "base"):  # R itself is numpy: kept beside the JSON, for validation
            regressions = result[label].pop("regressions")
            Regression(
                coef={v: r["coef"] for v, r in regressions.items()},
                intercept={v: float(r["intercept"]) for v, r in regressions.items()},
            ).save(work, label)
        write_json(work / self.result_file, result)
        return {"tuned": result["tuned"]["agreement"], "base": result["base"]["agreement"]}
