"""Explain SAE features and classify them as related to the training reward or not (§4.4, Appendix E.1).

Two explainers share one interface (:class:`Explainer`):

* :class:`ChatExplainer`: any OpenAI-compatible chat-completions API (OpenAI, vLLM, llama.cpp's server,
  Ollama, ...). It writes a one-sentence description from the feature's top-activating contexts in the
  manner of Bills et al. (2023), as the paper does with GPT-4, then is given the reward's description and
  answers whether the feature is related to it.
* :class:`OfflineExplainer`: needs no language model. Its "description" lists the tokens the feature
  fires on and its measured link to the known reward, and it calls a feature related when at least half of
  its top contexts peak on a word the reward scores. Its output is labelled as such wherever it appears
  (:attr:`Explainer.label`), because it is a measurement, not an interpretation.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from typing import Protocol

from irmscope.errors import IrmscopeError
from irmscope.interpret.evidence import FeatureEvidence

EXPLAIN_SYSTEM = (
    "We're studying features of a sparse autoencoder trained on a language model's activations. Each "
    "feature looks for some particular thing in a short document. Look at the tokens the feature activates "
    "on (activations on a 0-10 scale; 0 = not active) and summarise in one sentence what it looks for. "
    "Don't list examples of words."
)
CLASSIFY_SYSTEM = (
    "You decide whether a feature of a language model is related to the reward function the model was "
    "fine-tuned on. Answer with one word: Yes or No."
)


class Explainer(Protocol):
    """Describes a feature and says whether the description relates to the reward."""

    label: str  # shown beside every description it writes

    def explain(self, evidence: FeatureEvidence) -> str: ...

    def is_related(self, description: str, evidence: FeatureEvidence, reward_description: str) -> bool: ...


class OfflineExplainer:
    """Top tokens and correlation with the known reward; no language model involved."""

    label = (
        "offline lexicon heuristic (not a language model): top tokens and the feature's measured link to "
        "the known reward"
    )

    def __init__(self, min_reward_word_share: float = 0.5) -> None:
        self.min_reward_word_share = min_reward_word_share

    def explain(self, evidence: FeatureEvidence) -> str:
        tokens = ", ".join(repr(token) for token, _ in evidence.top_tokens[:6]) or "nothing in the sample"
        return (
            f"fires on {tokens}; active on {evidence.frequency:.1%} of tokens; "
            f"correlation with the reward's token values r = {evidence.reward_correlation:+.2f}; "
            f"{evidence.reward_word_share:.0%} of its top contexts peak on a word the reward scores"
        )

    def is_related(self, description: str, evidence: FeatureEvidence, reward_description: str) -> bool:
        return bool(evidence.contexts) and evidence.reward_word_share >= self.min_reward_word_share


def format_contexts(evidence: FeatureEvidence) -> str:
    """The contexts as ``token<TAB>activation`` lines, activations scaled to integers 0-10 (Bills et al.)."""
    peak = max((max(c.activations) for c in evidence.contexts), default=0.0) or 1.0
    blocks = []
    for context in evidence.contexts:
        lines = [
            f"{token!r}\t{round(10 * max(a, 0.0) / peak)}"
            for token, a in zip(context.tokens, context.activations, strict=True)
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


class ChatExplainer:
    """An OpenAI-compatible ``/chat/completions`` endpoint as the explainer (the paper used GPT-4).

    ``api_key`` defaults to the environment variable ``api_key_env``; a local server may need none.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
    ) -> None:
        if not base_url or not model:
            raise IrmscopeError(
                "the chat explainer needs interpret.base_url and interpret.model (e.g. "
                "https://api.openai.com/v1 and gpt-4o); or set interpret.explainer=offline"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = timeout
        self.label = f"{model} via {base_url} (LLM explainer)"

    def _chat(self, system: str, user: str) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read().decode())
        except urllib.error.HTTPError as err:
            raise IrmscopeError(
                f"explainer API {self.url} answered HTTP {err.code}; check interpret.model and the API key"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise IrmscopeError(
                f"explainer API {self.url} unreachable ({err}); check interpret.base_url, or use the "
                "offline explainer"
            ) from None
        try:
            return str(reply["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError):
            raise IrmscopeError(
                f"explainer API {self.url} sent no chat completion; is it OpenAI-compatible?"
            ) from None

    def explain(self, evidence: FeatureEvidence) -> str:
        user = (
            f"Feature {evidence.feature} at {evidence.site}.\n\n{format_contexts(evidence)}\n\n"
            "Explanation of the feature's behaviour: the main thing this feature does is find"
        )
        return self._chat(EXPLAIN_SYSTEM, user)

    def is_related(self, description: str, evidence: FeatureEvidence, reward_description: str) -> bool:
        answer = self._chat(
            CLASSIFY_SYSTEM,
            f"Reward function: {reward_description}\n\nFeature description: {description}\n\n"
            "Is this feature related to the reward function? Answer Yes or No.",
        )
        words = re.findall(r"[a-z]+", answer.lower())
        verdicts = [w for w in words if w in ("yes", "no")]
        if not verdicts:
            raise IrmscopeError(f"the explainer answered {answer[:60]!r} where Yes or No was asked")
        return verdicts[0] == "yes"


def build_explainer(
    kind: str, base_url: str | None = None, model: str | None = None, api_key_env: str = "OPENAI_API_KEY"
) -> Explainer:
    """The explainer a configuration names: ``offline`` or ``chat`` (an OpenAI-compatible API)."""
    if kind == "offline":
        return OfflineExplainer()
    if kind == "chat":
        return ChatExplainer(base_url or "", model or "", api_key_env=api_key_env)
    raise IrmscopeError(f"unknown explainer {kind!r}; choose offline or chat")
