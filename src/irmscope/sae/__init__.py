"""Sparse autoencoders: the model, a streaming trainer, quality metrics, dictionary comparison, SAELens I/O.

The main paper (§4.2, Appendices D and J) trains pairs of SAEs of different sizes on the MLP activations of
the most-changed layers, then keeps the features the two dictionaries share (MMCS, Eq. 2; §4.4)::

    from irmscope.sae import TrainConfig, train_sae, evaluate_sae, mmcs, top_shared_features, save_sae

    small, _ = train_sae(store, site, TrainConfig(d_sae=768))
    large, _ = train_sae(store, site, TrainConfig(d_sae=1536))
    mmcs(small, large); top_shared_features(small, large, k=10)
"""

from irmscope.sae.compare import (
    SharedFeatures,
    as_dictionary,
    cosine_matrix,
    max_cosine,
    mmcs,
    top_shared_features,
)
from irmscope.sae.io import load_sae, sae_lens_config, save_sae
from irmscope.sae.metrics import (
    SAEMetrics,
    SplicedLoss,
    appendix_j_figures,
    dead_fraction,
    evaluate_sae,
    fvu,
    l0,
    mse,
    spliced_lm_loss,
)
from irmscope.sae.model import SAE, SAEConfig, SAEOutput
from irmscope.sae.train import (
    DeadLatentTracker,
    TrainConfig,
    TrainLog,
    data_center,
    geometric_median,
    train_sae,
)

__all__ = [
    "SAE",
    "ActivationStatistics",
    "DeadLatentTracker",
    "SAEConfig",
    "SAEMetrics",
    "SAEOutput",
    "SharedFeatures",
    "SplicedLoss",
    "TrainConfig",
    "TrainLog",
    "activation_statistics",
    "appendix_j_figures",
    "as_dictionary",
    "cosine_matrix",
    "data_center",
    "dead_fraction",
    "evaluate_sae",
    "fvu",
    "geometric_median",
    "l0",
    "load_sae",
    "max_cosine",
    "mmcs",
    "mse",
    "sae_lens_config",
    "save_sae",
    "spliced_lm_loss",
    "top_shared_features",
    "train_sae",
]
