"""Two checks of a finished run's Table 5 attributed selection that the pipeline does not make.

1. More random draws of as many features (the table has one), to see the spread of the random control.
2. The same ablations (attributed and opposite-reward features, the tuned model's dictionaries) in the
   untuned base model: if they moved its reward as much, the features would not be what tuning leans on.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python scripts/table5_controls.py RUN_DIR [--draws 2 3]
It reads RUN_DIR/results.json and the run's stage folders, and prints one line per measurement (about
one minute per 200 prompts on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from irmscope.models import load_model
from irmscope.rewards import load_reward
from irmscope.sae import load_sae
from irmscope.validate import random_features, reward_under_ablation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--draws", type=int, nargs="*", default=[2, 3], help="extra random draws: seeds after the run's own"
    )
    args = parser.parse_args()
    results = json.loads((args.run_dir / "results.json").read_text())
    stage = {
        name: args.run_dir / "stages" / f"{name}-{s['key']}"
        for name, s in results["manifest"]["stages"].items()
    }
    config, table = results["config"], results["validation"]["table5"]
    if "attributed" not in table:
        raise SystemExit(f"{args.run_dir}: Table 5 has no attributed selection (lexicon rewards only)")
    tuned_path = config["model"]["tuned"] or str(stage["tune"] / "model")
    planted = stage.get("planted-lexicon")  # the pipeline planted the lexicon itself (reward.spec: planted)
    spec = f"lexicon:{planted / 'planted.tsv'}" if planted else config["reward"]["spec"]
    samples = json.loads(next(stage["evaluate"].glob("samples.json")).read_text())
    n, generation = table["n_prompts"], config["generation"]
    prompts = samples["prompts"][:n]
    reward, seed = load_reward(spec), config["seed"]
    saes = {site: load_sae(stage["saes-tuned"] / site) for site in table["attributed"]["features"]}

    def mean_after(lm, features) -> float:
        after = reward_under_ablation(
            lm, saes, features, prompts, reward, generation["max_new_tokens"], generation["batch_size"], seed,
            progress=False,
        )  # fmt: skip
        return float(np.mean(after))

    tuned, base = np.array(samples["tuned_scores"][:n]), np.array(samples["base_scores"][:n])
    gain = tuned.mean() - base.mean()
    lm = load_model(tuned_path)
    for draw in args.draws:  # the table's own draw used the run's seed + 1, so offset past it
        after = mean_after(lm, random_features(table["attributed"]["features"], saes, seed + draw))
        print(f"tuned, random draw {draw}: drop / tuning gain {100 * (tuned.mean() - after) / gain:.1f}%")
    lm = load_model(config["model"]["name"], seed=seed)
    for name in ("attributed", "attributed_opposite"):
        after = mean_after(lm, table[name]["features"])
        change = after - base.mean()
        print(f"base, {name} features ablated: reward {base.mean():.3f} -> {after:.3f} ({change:+.3f})")


if __name__ == "__main__":
    main()
