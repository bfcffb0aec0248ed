"""Reading the same texts once with one or more models, for every statistic that needs them.

Several methods read the same (prompt, continuation) texts with the same models: the audit's per-word
shifts and the policy shift need both models' next-token distributions at every position, the probes
need each model's residual stream at every layer. A :class:`Reader` says which sites of which model it
needs (and whether it needs the logits) and folds each batch into its own sums; :func:`read_pairs` runs
every model once per batch for all the readers together. A statistic computed alone goes through the same
function with one reader, so a pipeline run and a standalone call read the same tokens the same way.

Texts are encoded as :func:`~irmscope.models.readout.encode_pairs` does: prompt and continuation tokenised
apart (the tokens the policy was given and the tokens it wrote, even where a prompt ends mid-word),
right-padded, in batches of texts of similar length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.generation import batches, length_order
from irmscope.models.hooks import capture, capture_activations
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import Precision, matmul_precision
from irmscope.models.readout import encode_pairs


@dataclass
class PairBatch:
    """One batch of :func:`read_pairs`: ``rows`` says which input text each batch row is; ``logits`` and
    ``activations`` are keyed by the model's label (only the models and sites some reader asked for)."""

    rows: np.ndarray  #: ``[batch]``: the index of each row in the inputs
    input_ids: torch.Tensor  #: ``[batch, seq]``, right-padded
    mask: torch.Tensor  #: ``[batch, seq]``: 1 on real tokens
    prompt_lengths: torch.Tensor  #: ``[batch]``: each row's prompt length in tokens
    logits: dict[str, torch.Tensor]  #: label → ``[batch, seq, vocab]`` (float32)
    activations: dict[str, dict[str, torch.Tensor]]  #: label → site → ``[batch, seq, width]``
    _normalisers: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def log_normaliser(self, label: str) -> torch.Tensor:
        """``[batch, seq, 1]``: the logsumexp of the ``label`` model's logits at every position (a token's
        log-probability is its logit less this), computed once for every reader of the batch."""
        if label not in self._normalisers:
            self._normalisers[label] = self.logits[label].logsumexp(-1, keepdim=True)
        return self._normalisers[label]


class Reader:
    """A statistic folded over the batches of :func:`read_pairs`. Subclasses say what they need of each
    model (:meth:`sites`, :meth:`needs_logits`) and accumulate it in :meth:`update`."""

    def sites(self, label: str) -> Sequence[str]:
        """The hook sites of the ``label`` model this reader reads (none by default)."""
        return ()

    def needs_logits(self, label: str) -> bool:
        """Whether this reader reads the ``label`` model's logits (no by default)."""
        return False

    def update(self, batch: PairBatch) -> None:
        raise NotImplementedError(f"{type(self).__name__} must say how it reads a batch")


@torch.no_grad()
def read_pairs(
    models: Mapping[str, LoadedModel],
    prompts: Sequence[str],
    continuations: Sequence[str],
    readers: Sequence[Reader],
    *,
    max_length: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "reading",
    precision: Precision = "float32",
) -> None:
    """Run every model in ``models`` once over each batch of prompt + continuation texts and hand the batch
    to every reader. A model only sites are asked of stops after the deepest one; a model no reader asks
    anything of is not run. All models must share a tokenizer (the first one encodes).

    ``precision`` is that of the matrix products of passes no reader asks logits of
    (:mod:`irmscope.models.precision`); a pass whose logits are read is always float32, because its readers
    compare log-probabilities."""
    if not continuations:
        raise IrmscopeError("no texts to read; check the prompts and completions are not empty")
    if len(prompts) != len(continuations):
        raise IrmscopeError(f"{len(prompts)} prompts but {len(continuations)} continuations; they must pair")
    if not models:
        raise IrmscopeError("no model to read the texts with")
    encoder = next(iter(models.values()))
    wanted = {
        label: (
            sorted({site for r in readers for site in r.sites(label)}),
            any(r.needs_logits(label) for r in readers),
        )
        for label in models
    }
    order = length_order(prompts, continuations)  # batched by length: little padding
    for _, rows in batches(order, size=batch_size, progress=progress, desc=desc):
        ids, mask, prompt_lengths = encode_pairs(
            encoder, [prompts[i] for i in rows], [continuations[i] for i in rows], max_length
        )
        logits: dict[str, torch.Tensor] = {}
        activations: dict[str, dict[str, torch.Tensor]] = {}
        for label, lm in models.items():
            sites, with_logits = wanted[label]
            device = next(lm.model.parameters()).device
            on_device = ids.to(device), mask.to(device)
            if with_logits:  # float32 even inside a caller's autocast: its readers compare log-probabilities
                with capture(lm.model, sites) as captured, torch.autocast(device.type, enabled=False):
                    out = lm.model(input_ids=on_device[0], attention_mask=on_device[1], use_cache=False)
                logits[label] = out.logits.float()
                activations[label] = {site: captured[site] for site in sites}
            elif sites:
                with matmul_precision(precision, device):
                    activations[label] = capture_activations(lm.model, sites, *on_device)
        batch = PairBatch(np.asarray(rows), ids, mask, prompt_lengths, logits, activations)
        for reader in readers:
            reader.update(batch)


def input_order(batch_rows: Sequence[np.ndarray], n: int, what: str) -> np.ndarray:
    """The index that puts rows folded in :func:`read_pairs`' batch order (``batch_rows``, each batch's
    ``PairBatch.rows``) back in the order of the ``n`` inputs; raises unless every input was read once."""
    rows = np.concatenate(batch_rows) if len(batch_rows) else np.zeros(0, dtype=np.int64)
    if sorted(rows.tolist()) != list(range(n)):
        raise IrmscopeError(f"{what} saw {len(rows)} of {n} texts; read every text once")
    inverse = np.empty_like(rows)
    inverse[rows] = np.arange(len(rows))
    return inverse


@dataclass(frozen=True)
class CompletionLikelihoods:
    """What one forward pass of a model over prompt + completion gives every likelihood-based reward, per
    completion: the summed log-probability of its tokens given its prompt, and the logsumexp of the logits
    (a soft value, read as ``V``) after the prompt's last token and after the completion's last token.

    Computed once per model and shared by the DPO implicit reward and the endogenous reward, which would
    otherwise each run the same pass again."""

    log_likelihood: np.ndarray
    value_after_prompt: np.ndarray
    value_after_completion: np.ndarray


_LIKELIHOOD_FIELDS = ("log_likelihood", "value_after_prompt", "value_after_completion")


class CompletionStatistics(Reader):
    """Per text of :func:`read_pairs` (``n`` of them), under the ``policy`` model: the number of
    continuation tokens, their mean negative log-likelihood and :class:`CompletionLikelihoods`; with a
    ``reference`` model, from the same batches, the mean per-token KL(policy ‖ reference) over the
    vocabulary, the continuation's mean negative log-likelihood under the reference and the reference's
    likelihoods. :meth:`result` gives them in the texts' order (see :func:`completion_statistics`)."""

    def __init__(self, n: int, policy: str = "policy", reference: str | None = None) -> None:
        self.n, self.policy, self.reference = n, policy, reference
        self._rows: list[np.ndarray] = []
        self._parts: dict[str, list[np.ndarray]] = {}

    def needs_logits(self, label: str) -> bool:
        return label in (self.policy, self.reference)

    def _keep(self, **parts: np.ndarray) -> None:
        for name, values in parts.items():
            self._parts.setdefault(name, []).append(values)

    def _read(self, batch: PairBatch, label: str, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``label`` model's log-probabilities of each next token over the vocabulary (the last
        position predicts nothing) and of the token that came, with its likelihood fields kept."""
        logits = batch.logits[label]
        log_probs = (logits - batch.log_normaliser(label))[:, :-1]
        token = log_probs.gather(-1, target[:, 1:].unsqueeze(-1).to(logits.device)).squeeze(-1).cpu()
        completion = _continuation_mask(batch)
        rows, attention = torch.arange(len(logits)), batch.mask
        values = batch.log_normaliser(label)[..., 0].cpu()  # logsumexp of the logits: the soft value
        prompt_end = (attention.sum(1) - completion.sum(1) - 1).clamp(min=0)
        prefix = "" if label == self.policy else "reference_"
        self._keep(
            **{
                f"{prefix}log_likelihood": (token * completion[:, 1:]).sum(1).numpy(),
                f"{prefix}value_after_prompt": values[rows, prompt_end].numpy(),
                f"{prefix}value_after_completion": values[rows, attention.sum(1) - 1].numpy(),
            }
        )
        return log_probs, token

    def update(self, batch: PairBatch) -> None:
        target_mask = _continuation_mask(batch)[:, 1:].float()
        counts = target_mask.sum(1).clamp(min=1)
        self._rows.append(batch.rows)
        log_probs, token = self._read(batch, self.policy, batch.input_ids)
        self._keep(n_tokens=target_mask.sum(1).numpy(), nll=(-(token * target_mask).sum(1) / counts).numpy())
        if self.reference is None:
            return
        ref_log_probs, ref_token = self._read(batch, self.reference, batch.input_ids)
        ref_log_probs = ref_log_probs.to(log_probs.device)  # the models may sit on different devices
        per_token = (log_probs.exp() * (log_probs - ref_log_probs)).sum(-1).cpu()
        self._keep(
            kl=((per_token * target_mask).sum(1) / counts).numpy(),
            reference_nll=(-(ref_token * target_mask).sum(1) / counts).numpy(),
        )

    def result(self) -> dict[str, Any]:
        """``n_tokens``, ``nll`` and ``likelihoods`` (a :class:`CompletionLikelihoods`); with a reference
        also ``kl``, ``reference_nll`` and ``reference_likelihoods``: arrays in the texts' order."""
        inverse = input_order(self._rows, self.n, "the statistics")
        joined = {name: np.concatenate(parts)[inverse] for name, parts in self._parts.items()}
        out: dict[str, Any] = {
            name: joined[name] for name in ("n_tokens", "nll", "kl", "reference_nll") if name in joined
        }
        out["likelihoods"] = CompletionLikelihoods(**{name: joined[name] for name in _LIKELIHOOD_FIELDS})
        if self.reference is not None:
            out["reference_likelihoods"] = CompletionLikelihoods(
                **{name: joined[f"reference_{name}"] for name in _LIKELIHOOD_FIELDS}
            )
        return out


def _continuation_mask(batch: PairBatch) -> torch.Tensor:
    """``[batch, seq]``: 1 on each row's continuation tokens (after its prompt, before its padding)."""
    positions = torch.arange(batch.mask.shape[1]).expand_as(batch.mask)
    return batch.mask * (positions >= batch.prompt_lengths[:, None])


def completion_statistics(
    policy: LoadedModel,
    reference: LoadedModel | None,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 16,
) -> dict[str, Any]:
    """Per completion: its number of tokens, the mean negative log-likelihood of its tokens under
    ``policy`` and its :class:`CompletionLikelihoods` (``likelihoods``); with a ``reference``, from the
    same batches, the mean per-token KL(policy ‖ reference) over the vocabulary, the mean negative
    log-likelihood under the reference (``reference_nll``) and the reference's likelihoods
    (``reference_likelihoods``). One pass of each model gives all of them (:class:`CompletionStatistics`),
    so the pipeline's reading of the samples also serves the leaderboard's likelihood-based rewards."""
    statistics = CompletionStatistics(len(prompts), "policy", "reference" if reference is not None else None)
    models = {"policy": policy, **({"reference": reference} if reference is not None else {})}
    read_pairs(models, prompts, completions, [statistics], batch_size=batch_size)
    return statistics.result()


def completion_likelihoods(
    lm: LoadedModel, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 16
) -> CompletionLikelihoods:
    """:class:`CompletionLikelihoods` of each prompt and completion under ``lm``. With an empty prompt there
    is no state before the first token, so the value "after the prompt" is read after that token."""
    return completion_statistics(lm, None, prompts, completions, batch_size)["likelihoods"]
