"""Stage ``audit``: the blind audit (``irmscope audit``'s code) of the run's tuned model against its base,
on the evaluation samples: which words tuning rewarded and penalised above the empirical-null noise floor,
where the change comes from, and, for a lexicon reward, how far that is from the reward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import RESULT_FILES
from irmscope.audit import audit, write_audit
from irmscope.audit.shift import UnitShifts
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.stages import PART_SECONDS


@register
class Audit(Stage):
    name = "audit"
    # 2: a dictionary of the tuned-minus-base differences beside the crosscoder; 3: the word shifts and
    # activations from the read-samples stage (prompt and completion tokenised apart); 4: the known-reward
    # comparison's intervals take audit.n_resamples (they took 1000 whatever it said); 5: so do the shown
    # words' count changes, and the result records it
    version = 5
    needs = ("evaluate", "read-samples")
    result_key = "audit"
    result_file = RESULT_FILES["audit"]
    requires = ("tuned",)
    config_sections = ("audit", "reward")

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        settings, samples = ctx.config.audit, ctx.samples
        n = min(settings.n_prompts, len(samples.prompts))
        result = audit(
            ctx.tuned,
            ctx.base,
            samples.prompts[:n],
            lexicon=ctx.lexicon,
            completions=(samples.completions("base")[:n], samples.completions("tuned")[:n]),
            completion_tokens=ctx.config.generation.max_new_tokens,
            seed=ctx.seed,
            n_resamples=settings.n_resamples,
            crosscoder=settings.crosscoder_config(),
            shifts=UnitShifts.load(ctx.finished["read-samples"].dir).first_units(n),
            progress=ctx.progress,
        )
        table, crosscoder = result.pop("table"), result.pop("crosscoder")
        seconds = result.pop("seconds")  # varies from run to run: bookkeeping, not a result
        del result["samples"]  # the evaluate stage holds the samples
        result["settings"] = {
            "tuned": ctx.config.model.tuned or "the tuned model",
            "base": ctx.config.model.name,
        }
        write_audit(work, result, table, crosscoder=crosscoder, seed=ctx.seed)
        floor = result["floor"]
        return {"n_called": floor["n_called"], "n_rewarded": floor["n_rewarded"], PART_SECONDS: seconds}
