"""Interpreting SAE features (§4.4, Appendix E.1): evidence from top-activating contexts, explainers
(an OpenAI-compatible chat API or an offline one), and the related-to-the-reward classification."""

from irmscope.interpret.evidence import Context, FeatureEvidence, feature_evidence, token_values
from irmscope.interpret.explainers import ChatExplainer, Explainer, OfflineExplainer, build_explainer
from irmscope.interpret.study import interpret_features

__all__ = [
    "ChatExplainer",
    "Context",
    "Explainer",
    "FeatureEvidence",
    "OfflineExplainer",
    "build_explainer",
    "feature_evidence",
    "interpret_features",
    "token_values",
]
