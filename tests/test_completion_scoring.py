"""TRL's fused LM head on a CPU: scoring only the labelled (completion) positions gives the same
log-probabilities and gradients as projecting every position, on a fraction of the rows."""

from __future__ import annotations

import torch
from trl.kernels import ChunkedLogProbFunction
from trl.trainer import utils as trl_utils
from trl.trainer.utils import add_fused_lm_head

from irmscope.models.loading import load_model
from irmscope.tune.completion_scoring import completion_positions_only


def _count_projected_rows(patch) -> list[int]:
    """Through ``patch`` (a monkeypatch), make TRL's fused head record the rows of every projection it
    makes; the returned list fills as it runs."""
    rows: list[int] = []

    class Counting:
        @staticmethod
        def apply(hidden, *args):
            rows.append(hidden.shape[0])
            return ChunkedLogProbFunction.apply(hidden, *args)

    patch.setattr(trl_utils, "_ChunkedLogProbFunction", Counting)
    return rows


def _scored(model, input_ids, labels, monkeypatch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Log-probabilities of the fused head, the gradient of their sum on the input embeddings, and how many
    rows the head projected."""
    embeddings = model.get_input_embeddings()(input_ids).detach().requires_grad_()
    with monkeypatch.context() as patch:
        rows = _count_projected_rows(patch)
        out = model(inputs_embeds=embeddings, labels=labels, fused_lm_head=True)
    out.log_probs.sum().backward()
    return out.log_probs.detach(), embeddings.grad, sum(rows)


def test_completion_positions_only_scores_fewer_rows_with_the_same_log_probs_and_gradients(monkeypatch):
    model = load_model("tiny-llama").model.float()
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    torch.manual_seed(0)
    input_ids = torch.randint(5, 200, (3, 12))
    labels = input_ids.clone()
    labels[:, :8] = -100  # a prompt of 8 tokens, 4 completion tokens scored
    labels[2, 8:10] = -100  # and a row whose completion starts later

    full, full_grad, full_rows = _scored(model, input_ids, labels, monkeypatch)
    before = trl_utils._use_triton
    with completion_positions_only():
        assert trl_utils._use_triton is not before
        compact, compact_grad, compact_rows = _scored(model, input_ids, labels, monkeypatch)
    assert trl_utils._use_triton is before  # TRL's own decision is back

    assert full_rows == 3 * 11  # every position but the last, prompt included
    assert compact_rows == int((labels[:, 1:] != -100).sum())  # the labelled positions only
    torch.testing.assert_close(compact, full, rtol=0, atol=1e-5)
    assert (compact[labels[:, 1:] == -100] == 0).all()
    torch.testing.assert_close(compact_grad, full_grad, rtol=1e-4, atol=1e-6)


def test_tuning_projects_only_the_completion_tokens(monkeypatch, tmp_path):
    """A GRPO run on a CPU (tune_model) goes through the compact path: every projection the fused head
    makes holds at most the step's completion tokens (4 rows of 4 here), never its prompt positions."""
    from irmscope.config import TuneSection
    from irmscope.rewards import CallableReward
    from irmscope.tune import tune_model

    rows = _count_projected_rows(monkeypatch)
    settings = TuneSection(steps=1, batch_size=4, group_size=2, max_completion_tokens=4, lora=False)
    reward = CallableReward(lambda texts: [t.count("e") for t in texts], "letter_e", "counts the letter e")
    prompts = [f"Review {i}: this film was, all things considered," for i in range(8)]
    tune_model("tiny-llama", reward, prompts, tmp_path, settings=settings, progress=False)
    assert rows and max(rows) <= 4 * 4  # the full path would project every prompt position too
