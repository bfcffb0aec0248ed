"""Reward probes on the residual stream, and steering along reward directions (the probe study
"Do RL'd models estimate anticipated rewards?")."""

from irmscope.probes.residuals import Residuals, read_positions, read_residuals
from irmscope.probes.ridge import LinearProbe, cross_fitted, fit_probe, group_split, held_out_score
from irmscope.probes.steering import DEFAULT_SCALES, random_directions, steering_curves, typical_norm
from irmscope.probes.study import ProbeStudy, probe_study

__all__ = [
    "DEFAULT_SCALES",
    "LinearProbe",
    "ProbeStudy",
    "Residuals",
    "cross_fitted",
    "fit_probe",
    "group_split",
    "held_out_score",
    "probe_study",
    "random_directions",
    "read_positions",
    "read_residuals",
    "steering_curves",
    "typical_norm",
]
