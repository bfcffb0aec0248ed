"""The built-in stages, one module each, imported in pipeline order (importing registers them)."""

# isort: skip_file
from irmscope.pipeline.stages import (  # noqa: F401  (imported for registration, in this order)
    planted,
    prompts,
    tune,
    evaluate,
    read_samples,
    divergence,
    sites,
    activations,
    saes,
    elicit,
    interpret,
    validate,
    probes,
    steer,
    attribute,
    leaderboard,
    irl_reward,
    audit,
)
