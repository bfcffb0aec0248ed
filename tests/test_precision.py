"""bfloat16 matrix products for passes that only sample or read activations (irmscope.models.precision)."""

from __future__ import annotations

import pytest
import torch

from irmscope.config import load_config
from irmscope.elicit.continuations import continuation_activations, word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.models.generation import Sampling
from irmscope.models.precision import matmul_precision, native_bfloat16, resolve_precision
from irmscope.models.reading import CompletionStatistics, read_pairs
from irmscope.probes.residuals import read_residuals

PROMPTS = ["The film was a quiet", "I expected more from", "What a"]
COMPLETIONS = [" delight from start to finish", " the second half, sadly", " mess of a plot"]


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-llama")


def test_auto_is_bfloat16_exactly_where_the_device_has_it_natively():
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16("cpu") else "float32")
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(IrmscopeError, match="use one of auto, float32, bfloat16"):
        resolve_precision("float16")


def test_bfloat16_rounds_the_products_and_float32_leaves_them_exact(lm):
    ids = lm.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        exact = lm.model(**ids).logits
        with matmul_precision("float32"):
            same = lm.model(**ids).logits
        with matmul_precision("bfloat16"):
            rounded = lm.model(**ids).logits.float()
    assert torch.equal(exact, same)
    assert not torch.equal(exact, rounded)
    assert (exact - rounded).abs().max() < 0.1  # rounded, not wrong


def test_sampling_precision_is_the_samplings_own_setting(lm):
    """float32 sampling repeats itself exactly; the config's generation.precision reaches the run's Sampling
    (the smoke preset pins float32, so asking for bfloat16 must change it), and a stage's settings carry
    the precision ``auto`` resolves to on this machine, so a folder reused elsewhere recomputes."""
    from irmscope.config import load_config
    from irmscope.pipeline.context import RunContext
    from irmscope.pipeline.registry import section_values

    exact = Sampling(max_new_tokens=5, precision="float32", progress=False)
    assert exact.complete(lm, PROMPTS) == exact.complete(lm, PROMPTS)
    fast = Sampling(max_new_tokens=5, precision="bfloat16", progress=False).complete(lm, PROMPTS)
    assert len(fast) == len(PROMPTS)
    ctx = RunContext(load_config("smoke", overrides=["generation.precision=bfloat16"]), progress=False)
    assert ctx.sampling.precision == "bfloat16"
    auto = load_config("demo").generation
    assert auto.precision == "auto" and section_values(auto)["precision"] == resolve_precision("auto")
    with pytest.raises(Exception, match="precision"):
        load_config("smoke", overrides=["generation.precision=half"])


def test_native_bfloat16_needs_the_cpu_flags_not_just_avx512(monkeypatch):
    """oneDNN's own check accepts any AVX512 CPU and emulates bfloat16 there; auto must not pick it."""
    from irmscope import provenance
    from irmscope.models import precision

    monkeypatch.setattr(provenance, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw", "avx512vl"}))
    assert not precision.native_bfloat16("cpu") and precision.resolve_precision("auto") == "float32"
    monkeypatch.setattr(provenance, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.native_bfloat16("cpu") == torch.backends.mkldnn.is_available()


def test_passes_whose_logits_are_read_stay_float32_whatever_the_precision(lm):
    """read_pairs rounds only activation-only passes: log-probabilities are compared, so a logits pass is
    float32 even when bfloat16 is asked for."""

    def nll(precision: str):
        reader = CompletionStatistics(len(PROMPTS))
        read_pairs({"policy": lm}, PROMPTS, COMPLETIONS, [reader], precision=precision)
        return reader.result()["nll"]

    reference = nll("float32").tolist()
    assert nll("bfloat16").tolist() == reference
    with matmul_precision("bfloat16"):  # nor inside a caller's autocast
        assert nll("float32").tolist() == reference


def test_residual_readouts_in_bfloat16_are_close_to_float32_ones(lm):
    exact = read_residuals(lm, PROMPTS, COMPLETIONS, progress=False, precision="float32")
    fast = read_residuals(lm, PROMPTS, COMPLETIONS, progress=False, precision="bfloat16")
    assert fast.last.dtype == exact.last.dtype and fast.last.shape == exact.last.shape
    assert (
        0 < abs(fast.last - exact.last).max()
        and (((fast.last - exact.last) ** 2).sum() / (exact.last**2).sum()) ** 0.5 < 0.02
    )


def test_word_activations_in_bfloat16_are_close_to_float32_ones(lm):
    words = list(word_token_ids(lm.tokenizer, ["good", "bad", "fun"]).values())
    site = "blocks.1.hook_resid_post"
    exact, fast = (
        continuation_activations(lm, PROMPTS, words, sites=[site], precision=p).activations[site]
        for p in ("float32", "bfloat16")
    )
    assert fast.dtype == exact.dtype == torch.float32 and fast.shape == exact.shape
    assert 0 < (fast - exact).abs().max() and ((fast - exact).norm() / exact.norm()) < 0.02


def test_the_elicitation_reads_words_in_its_configured_precision(monkeypatch):
    """``elicit.precision`` is resolved for the model's device and reaches both studies' inputs, and
    ``_feature_sets`` hands it to the two passes that read the triples and the words."""
    from irmscope.elicit import lexicon_study, reward_study
    from irmscope.models import precision

    seen = []
    monkeypatch.setattr(
        reward_study, "lexicon_study", lambda lm, saes, inputs, bar=None: seen.append(inputs) or {}
    )
    monkeypatch.setattr(reward_study, "_policy_shift_study", lambda *a: ({}, {}))
    monkeypatch.setattr(reward_study, "_irm_gap", lambda *a: {})
    lm = load_model("tiny-llama")
    texts = ["This movie was good and the acting was great but the ending was bad and dull overall"] * 40
    lexicon = {"good": 2.0, "great": 3.0, "bad": -2.0, "dull": -1.5}
    settings = load_config("smoke", overrides=["elicit.precision=auto"]).elicit
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu", native=native: native)
        seen.clear()
        reward_study.elicit_lexicon_reward(
            lm, lm, tuned_saes={}, base_saes={}, lexicon=lexicon, texts=texts, shift_levels=None,
            settings=settings,
        )  # fmt: skip
        assert [inputs.precision for inputs in seen] == [expected, expected]

    class Read(Exception):
        pass

    passes = {}

    def read_words(*args, **kwargs):
        passes["words"] = kwargs
        raise Read  # both passes are recorded: nothing after them is under test

    monkeypatch.setattr(lexicon_study, "triple_activations", lambda *a, **kw: passes.update(triples=kw))
    monkeypatch.setattr(lexicon_study, "word_activations", read_words)
    inputs = lexicon_study.StudyInputs(lexicon, [], ["It was"], precision="bfloat16")
    with pytest.raises(Read):
        next(lexicon_study._feature_sets(lm, {}, inputs, ["good"]))
    assert passes["triples"]["precision"] == passes["words"]["precision"] == "bfloat16"
