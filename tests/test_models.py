"""Hook sites and interventions on every supported family, and the model loader's errors."""

import ast
import copy
import inspect
import json
import os
import time
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from irmscope.errors import IrmscopeError
from irmscope.models import (
    ablate,
    capture,
    capture_activations,
    intervene,
    last_token_positions,
    load_model,
    parse_site,
    steer,
)
from irmscope.models.accounting import TokenCounts, counted
from irmscope.models.generation import generate_completions
from irmscope.models.hooks import select_positions, stop_after_deepest
from irmscope.models.kv_cache import CACHE_NAME, cache_argument, returned_cache
from irmscope.models.sources import TINY_FAMILIES
from irmscope.models.tokenizer_copies import TokenizerCopies, backend_state, folder_tokenizer

TEXTS = ["The film was a quiet delight from start to finish", "Dull."]


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny(request):
    return load_model(f"tiny-{request.param}")


@pytest.fixture(scope="module")
def batch(tiny):
    return tiny.tokenizer(TEXTS, return_tensors="pt", padding=True)


def test_resid_post_matches_hidden_states(tiny, batch):
    with torch.no_grad(), capture(tiny.model, tiny.sites(("hook_resid_pre", "hook_resid_post"))) as cap:
        out = tiny.model(**batch, output_hidden_states=True)
    hidden = out.hidden_states
    assert len(hidden) == tiny.n_layers + 1
    for layer in range(tiny.n_layers):
        torch.testing.assert_close(cap[f"blocks.{layer}.hook_resid_pre"], hidden[layer])
    for layer in range(tiny.n_layers - 1):
        torch.testing.assert_close(cap[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1])
    # transformers applies the final norm to the last hidden state; our site is before it.
    last = cap[f"blocks.{tiny.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(tiny.adapter.final_norm_module(tiny.model)(last), hidden[-1])


def test_block_output_is_resid_pre_plus_attn_plus_mlp(tiny, batch):
    with torch.no_grad(), capture(tiny.model, tiny.sites()) as cap:
        tiny.model(**batch)
    for layer in range(tiny.n_layers):
        site = f"blocks.{layer}."
        total = cap[site + "hook_resid_pre"] + cap[site + "hook_attn_out"] + cap[site + "hook_mlp_out"]
        torch.testing.assert_close(total, cap[site + "hook_resid_post"], rtol=1e-4, atol=1e-5)
        assert cap[site + "mlp.hook_post"].shape[-1] != tiny.d_model  # the MLP's hidden width


def test_mlp_hook_post_feeds_the_down_projection(tiny, batch):
    block = tiny.adapter.blocks(tiny.model)[1]
    with torch.no_grad(), capture(tiny.model, ["blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"]) as cap:
        tiny.model(**batch)
        expected = block.get_submodule(tiny.adapter.mlp_down)(cap["blocks.1.mlp.hook_post"])
        if tiny.adapter.mlp_out != "mlp":  # Gemma normalises the MLP's output before adding it
            expected = block.get_submodule(tiny.adapter.mlp_out)(expected)
    torch.testing.assert_close(expected, cap["blocks.1.hook_mlp_out"])


def test_identity_replacement_keeps_logits(tiny, batch):
    with torch.no_grad():
        reference = tiny.model(**batch).logits
        with intervene(tiny.model, {site: (lambda a: a) for site in tiny.sites()}):
            edited = tiny.model(**batch).logits
    torch.testing.assert_close(edited, reference)


def test_ablating_an_mlp_changes_logits(tiny, batch):
    with torch.no_grad():
        reference = tiny.model(**batch).logits
        with ablate(tiny.model, "blocks.1.hook_mlp_out"):
            ablated = tiny.model(**batch).logits
    assert (ablated - reference).abs().max() > 1e-4
    # the hooks are gone once the block ends
    with torch.no_grad():
        torch.testing.assert_close(tiny.model(**batch).logits, reference)


def test_steering_adds_the_vector_downstream(tiny, batch):
    vector = torch.randn(tiny.d_model)
    with torch.no_grad(), capture(tiny.model, ["blocks.2.hook_resid_pre"]) as cap:
        tiny.model(**batch)
        with steer(tiny.model, "blocks.1.hook_resid_post", vector, scale=2.0, positions=0):
            tiny.model(**batch)
    plain, steered = cap.all("blocks.2.hook_resid_pre")
    torch.testing.assert_close(steered[:, 0], plain[:, 0] + 2.0 * vector)
    torch.testing.assert_close(steered[:, 1:], plain[:, 1:])


def test_early_stop_gives_the_same_activations_and_skips_later_blocks(tiny, batch):
    sites = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    calls = []
    last_block = tiny.adapter.blocks(tiny.model)[-1]
    handle = last_block.register_forward_hook(lambda *_: calls.append(1))
    try:
        early = capture_activations(tiny.model, sites, batch["input_ids"], batch["attention_mask"])
        assert calls == []
        full = capture_activations(
            tiny.model, sites, batch["input_ids"], batch["attention_mask"], stop_early=False
        )
        assert calls == [1]
    finally:
        handle.remove()
    for site in sites:
        torch.testing.assert_close(early[site], full[site])


def test_last_token_positions_with_left_padding(tiny, batch):
    positions = last_token_positions(batch["attention_mask"])
    assert positions.tolist() == [batch["input_ids"].shape[1] - 1] * 2  # left padding: last column
    acts = capture_activations(
        tiny.model,
        ["blocks.0.hook_resid_post"],
        batch["input_ids"],
        batch["attention_mask"],
        positions=positions,
    )
    assert acts["blocks.0.hook_resid_post"].shape == (2, tiny.d_model)


def test_token_accounting_sorts_every_pass_by_kind(tiny, batch):
    """Plain passes count their real (unpadded) tokens, passes with gradients count as backward, a
    generation counts its prompts' prefill as forward and one token per row per cached step as sampled, and
    a capture stopped early counts the share of the blocks it ran."""
    real = int(batch["attention_mask"].sum())

    def counts(**kinds: int) -> dict[str, int]:
        return {kind: kinds.get(kind, 0) for kind in TokenCounts().to_dict()}

    with counted() as plain, torch.no_grad():
        tiny.model(**batch)
    assert plain.to_dict() == counts(forward=real)
    with counted() as trained:
        tiny.model(**batch).logits.sum().backward()
    tiny.model.zero_grad(set_to_none=True)
    assert trained.to_dict() == counts(backward=real)
    with counted() as mixed, torch.autocast("cpu", dtype=torch.bfloat16):  # as TrainingArguments' bf16
        tiny.model(**batch).logits.float().sum().backward()
    tiny.model.zero_grad(set_to_none=True)
    assert mixed.to_dict() == counts(backward_bfloat16=real)
    for precision, suffix in (("float32", ""), ("bfloat16", "_bfloat16")):  # bfloat16 passes are apart
        with counted() as sampled:
            generate_completions(
                tiny, TEXTS, max_new_tokens=4, batch_size=2, progress=False, precision=precision
            )
        assert sampled.to_dict() == counts(**{f"forward{suffix}": real, f"sampled{suffix}": len(TEXTS) * 3})
    n_blocks = tiny.n_layers
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with counted() as stopped:  # a capture that stops after block 0 ran 1 of the blocks
        capture_activations(tiny.model, ["blocks.0.hook_resid_post"], ids, mask)
    assert stopped.forward == real - round(real * (n_blocks - 1) / n_blocks) and n_blocks > 1
    with counted() as whole:  # the deepest block: nothing was skipped
        capture_activations(tiny.model, [f"blocks.{n_blocks - 1}.hook_resid_post"], ids, mask)
    assert whole.forward == real
    with torch.no_grad():  # a cached step stopped early takes back its skipped share of the sampled tokens
        prefix = tiny.model(input_ids=ids, attention_mask=mask, use_cache=True)
        step, step_mask = ids[:, :1], torch.cat([mask, mask[:, :1]], dim=1)
        cache = returned_cache(prefix)
        with (
            counted() as cached,
            stop_after_deepest(tiny.model, ["blocks.0.hook_resid_post"], step, step_mask, cache),
        ):
            tiny.model(input_ids=step, attention_mask=step_mask, use_cache=True, **cache_argument(cache))
    assert cached.to_dict() == counts(sampled=len(ids) - round(len(ids) * (n_blocks - 1) / n_blocks))
    with torch.no_grad():  # its kind is taken before the pass fills an empty cache: a forward pass here
        empty = DynamicCache(config=tiny.model.config)
        stop = stop_after_deepest(tiny.model, ["blocks.0.hook_resid_post"], step, None, empty)
        with counted() as fresh, stop:
            tiny.model(input_ids=step, use_cache=True, **cache_argument(empty))
    assert fresh.to_dict() == counts(forward=len(ids) - round(len(ids) * (n_blocks - 1) / n_blocks))


def test_last_token_positions_with_right_padding():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert last_token_positions(mask).tolist() == [2, 0, 3]
    acts = torch.arange(3 * 4).reshape(3, 4, 1)
    assert select_positions(acts, last_token_positions(mask)).squeeze(-1).tolist() == [2, 4, 11]


@pytest.mark.parametrize("bad", ["blocks.x.hook_resid_post", "resid_post", "blocks.0.hook_mlp_in"])
def test_bad_site_names(bad):
    with pytest.raises(IrmscopeError, match="unknown hook site"):
        parse_site(bad)


def test_out_of_range_layer():
    lm = load_model("tiny-llama")
    with pytest.raises(IrmscopeError, match="out of range"):
        capture_activations(lm.model, ["blocks.99.hook_resid_post"], torch.tensor([[1, 2]]))


def test_unknown_model_names_the_choices():
    with pytest.raises(IrmscopeError, match="unknown model 'smollm-135'.*smollm2-135m") as err:
        load_model("smollm-135")
    assert "\n" not in str(err.value)


def test_missing_local_folder(tmp_path):
    with pytest.raises(IrmscopeError, match="no such model folder"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(IrmscopeError, match="no config.json"):
        load_model(str(tmp_path))


def test_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(IrmscopeError, match="offline"):
        load_model("EleutherAI/pythia-70m-not-cached")
    assert time.monotonic() - start < 10


def test_local_folder_round_trip(tmp_path):
    lm = load_model("tiny-gpt_neox")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    ids = lm.tokenizer(TEXTS[:1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, lm.model(ids).logits)
    assert again.adapter.family == "gpt_neox"


def test_the_configured_temperature_and_top_p_reach_sampling(tmp_path):
    """generation.temperature and generation.top_p travel through the run's Sampling into generate: near
    zero temperature every seed draws the greedy completion, at temperature 1 seeds differ."""
    from dataclasses import replace

    from irmscope.config import load_config
    from irmscope.models.generation import Sampling
    from irmscope.pipeline.context import RunContext

    overrides = [f"out_dir={tmp_path}", "generation.temperature=0.001", "generation.top_p=0.5"]
    sampling = RunContext(load_config("smoke", overrides=overrides), progress=False).sampling
    assert (sampling.temperature, sampling.top_p) == (0.001, 0.5)
    lm = load_model("tiny-llama")
    cold = {replace(sampling, seed=s, max_new_tokens=6).complete(lm, TEXTS)[0] for s in range(4)}
    warm = {Sampling(max_new_tokens=6, seed=s, progress=False).complete(lm, TEXTS)[0] for s in range(4)}
    assert len(cold) == 1 and len(warm) > 1


def test_end_of_text_is_suppressed_in_place_for_every_end_token():
    from irmscope.models.generation import end_of_text_suppressed

    lm = load_model("tiny-llama")
    suppress = end_of_text_suppressed(lm)
    assert lm.tokenizer.eos_token_id in suppress.token_ids
    scores = torch.randn(3, lm.model.config.vocab_size)
    kept = [i for i in range(scores.shape[1]) if i not in suppress.token_ids]
    before = scores.clone()
    out = suppress(torch.zeros(3, 5, dtype=torch.long), scores)
    assert out is scores  # in place: no copy of the scores per step
    assert torch.isinf(out[:, suppress.token_ids]).all() and (out[:, suppress.token_ids] < 0).all()
    assert torch.equal(out[:, kept], before[:, kept])


def test_the_lazy_package_exports_what_its_submodules_define():
    """``irmscope.models`` loads its names on first use: each name of ``__all__`` has a home, type checkers
    import it from there, and the package gives the very object its home module defines."""
    import importlib

    import irmscope.models as package

    homes = {name: module for module, names in package._HOMES.items() for name in names}
    assert sorted(homes) == sorted(package.__all__)
    tree = ast.parse(Path(package.__file__).read_text())
    guards = [node for node in tree.body if isinstance(node, ast.If)]
    typed = next(node for node in guards if ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {
        alias.name: node.module.rsplit(".", 1)[1] for node in typed.body for alias in node.names
    }  # what type checkers see: the same names from the same modules
    assert imported == homes
    for name, module in homes.items():
        assert getattr(package, name) is getattr(importlib.import_module(f"irmscope.models.{module}"), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        package.nothing_here  # noqa: B018


def test_the_light_list_of_tiny_families_is_the_one_tiny_builds():
    """Model names are checked without importing transformers (``sources.TINY_FAMILIES``); the tiny
    builder's configs must cover exactly those families."""
    from irmscope.models import sources, tiny

    assert tuple(tiny._FAMILY_CONFIGS) == sources.TINY_FAMILIES


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_cached_step_names_the_cache_as_the_installed_transformers_does(family):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` and warns at every call with the old name
    (pyproject's warning filter makes that warning fail any test); earlier releases know only the old name.
    Every family takes the cache by :data:`CACHE_NAME`, and a step on it equals the uncached pass."""
    tiny = load_model(f"tiny-{family}")
    assert CACHE_NAME in inspect.signature(tiny.model.forward).parameters
    ids = tiny.tokenizer(["the film was great"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        prefix = tiny.model(input_ids=ids[:, :-1], use_cache=True)
        step = tiny.model(input_ids=ids[:, -1:], use_cache=True, **cache_argument(returned_cache(prefix)))
        whole = tiny.model(input_ids=ids, use_cache=False)
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], rtol=1e-4, atol=1e-4)


def test_tokenizer_copies_share_the_backend_until_one_changes_it_for_good(smollm2_tokenizer, tmp_path):
    """A copy's Python side is its own; the Rust backend is shared. What a call sets on it (padding,
    truncation, splitting special tokens) is set back for each new copy, so a copy saved at once writes
    what the kept tokenizer would. A change that stays (added tokens, a pipeline part) gives the next copy
    the original back, and the changed copy keeps its change."""
    kept = copy.deepcopy(smollm2_tokenizer)
    kept.backend_tokenizer.no_padding()  # the session's tokenizer has been called by other tests
    kept.backend_tokenizer.no_truncation()
    pristine = kept.backend_tokenizer.to_str()
    copies = TokenizerCopies(kept)
    first, second = copies.copy(), copies.copy()
    assert first.backend_tokenizer is second.backend_tokenizer
    first.padding_side = "left"
    assert second.padding_side == smollm2_tokenizer.padding_side == "right"
    padded = {"padding": "max_length", "max_length": 6}
    left, right = (t(["a review"], **padded)["input_ids"] for t in (first, second))
    assert right == smollm2_tokenizer(["a review"], **padded)["input_ids"] != left
    assert first(["a review"], **padded)["input_ids"] == left  # each call sets the shared padding again
    first(["<|im_start|> a review"], truncation=True, max_length=3, split_special_tokens=True)
    third = copies.copy()
    assert third.backend_tokenizer is first.backend_tokenizer and third.backend_tokenizer.to_str() == pristine
    third.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "tokenizer.json").read_text()) == json.loads(pristine)
    for change in (
        lambda t: t.add_tokens(["zzqqxx"]),
        lambda t: setattr(t.backend_tokenizer, "post_processor", None),
    ):
        changed = copies.copy()
        change(changed)
        later = copies.copy()
        assert later.backend_tokenizer is not changed.backend_tokenizer
        assert later.backend_tokenizer.to_str() == pristine
        assert backend_state(changed.backend_tokenizer) != backend_state(later.backend_tokenizer)
    assert later("<|im_start|> zzqqxx")["input_ids"] == smollm2_tokenizer("<|im_start|> zzqqxx")["input_ids"]
    # a tokenizer kept with padding and truncation on gets them back after a call that turned them off
    padding_on = copy.deepcopy(smollm2_tokenizer)
    padding_on.backend_tokenizer.enable_padding(direction="left", pad_id=2, pad_token="<|im_end|>", length=8)
    padding_on.backend_tokenizer.enable_truncation(max_length=5, direction="left")
    settings = padding_on.backend_tokenizer.padding, padding_on.backend_tokenizer.truncation
    on = TokenizerCopies(padding_on)
    on.copy()(["a review"], padding=False, truncation=False)
    again = on.copy().backend_tokenizer
    assert again.padding is not None and (again.padding, again.truncation) == settings


def test_a_folder_tokenizer_is_read_once_while_its_files_are_unchanged(
    smollm2_tokenizer, tmp_path, monkeypatch
):
    """folder_tokenizer reads a folder again only when a file in it changed, keeps at most FOLDERS_KEPT
    folders, and hands out copies that tokenise as the tokenizer read from the folder does."""
    import transformers

    from irmscope.models import tokenizer_copies

    reads = []
    read = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(tokenizer_copies, "_FOLDERS", {})
    monkeypatch.setattr(
        transformers.AutoTokenizer, "from_pretrained", lambda f, **k: reads.append(f) or read(f, **k)
    )
    folders = [tmp_path / f"tokenizer{i}" for i in range(tokenizer_copies.FOLDERS_KEPT + 1)]
    for folder in folders:
        smollm2_tokenizer.save_pretrained(folder)
    one, two = folder_tokenizer(folders[0]), folder_tokenizer(folders[0])
    assert reads == [folders[0]] and one is not two and one.backend_tokenizer is two.backend_tokenizer
    text = "A quietly moving film. <|im_end|>"
    assert one(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]
    config = folders[0] / "tokenizer_config.json"
    config.write_text(config.read_text())  # the same content, written again: another modification time
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    folder_tokenizer(folders[0])
    assert reads == [folders[0]] * 2
    assert len(tokenizer_copies._FOLDERS) == 1  # the changed folder's earlier tokenizer was let go
    for folder in folders[1:]:
        folder_tokenizer(folder)
    assert len(tokenizer_copies._FOLDERS) == tokenizer_copies.FOLDERS_KEPT
    folder_tokenizer(folders[-1])
    folder_tokenizer(folders[0])  # the oldest was let go
    assert reads == [folders[0]] * 2 + folders[1:] + [folders[0]]
    # a new folder inside is a new entry; an entry removed while the folder is listed is left out
    n_reads = len(reads)
    (folders[0] / "checkpoint-2").mkdir()
    folder_tokenizer(folders[0])
    assert reads[n_reads:] == [folders[0]]
    stat = Path.stat
    monkeypatch.setattr(
        Path, "stat", lambda p, **k: _raise(FileNotFoundError(p)) if p.name == "rotated" else stat(p, **k)
    )
    (folders[0] / "rotated").mkdir()
    assert folder_tokenizer(folders[0])(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]
    assert reads[n_reads:] == [folders[0]]
    assert "rotated" not in {name for name, _, _ in tokenizer_copies._entries(folders[0])}


def _raise(error: Exception):
    raise error


def test_a_tiny_model_is_built_once_and_every_load_is_a_copy_a_fresh_build_cannot_tell_apart(monkeypatch):
    """build_tiny keeps its first build of each (family, seed): a later load gets copies that a change to
    an earlier load's weights or tokenizer does not reach, the same weights as a fresh build, and torch's
    random state as a fresh build leaves it (seeded, then drawn from by the initialisation). The copies
    share the tokenizer's Rust backend until one of them changes it for good."""
    from irmscope.models import tiny
    from irmscope.models.tiny import _build_tiny

    builds = []
    monkeypatch.setattr(tiny, "_BUILT", {})
    monkeypatch.setattr(tiny, "_build_tiny", lambda *args: builds.append(args) or _build_tiny(*args))
    first = load_model("tiny-gpt2")
    after_first = torch.rand(4)
    with torch.no_grad():
        first.model.get_input_embeddings().weight.add_(1.0)
    unchanged = load_model("tiny-gpt2").tokenizer
    assert unchanged.backend_tokenizer is first.tokenizer.backend_tokenizer  # shared while nothing changed
    first.tokenizer.add_tokens(["zzqqxx"])
    second = load_model("tiny-gpt2")
    after_second = torch.rand(4)
    assert builds == [("gpt2", 0)]  # the second load was a copy
    fresh_model, fresh_tokenizer = _build_tiny("gpt2", 0)
    after_fresh = torch.rand(4)
    assert torch.equal(after_first, after_second) and torch.equal(after_second, after_fresh)
    fresh = fresh_model.state_dict()
    assert all(torch.equal(weight, fresh[name]) for name, weight in second.model.state_dict().items())
    assert len(second.tokenizer) == len(fresh_tokenizer) == len(first.tokenizer) - 1
    assert second.tokenizer.backend_tokenizer is not first.tokenizer.backend_tokenizer
    second.tokenizer.backend_tokenizer.post_processor = None  # a change a tokenizer call does not undo
    third = load_model("tiny-gpt2").tokenizer
    fresh_tokenizer.padding_side = third.padding_side  # the loaded model pads on the left
    assert third.backend_tokenizer.to_str() == fresh_tokenizer.backend_tokenizer.to_str()
    padded = {"padding": "max_length", "max_length": 6}
    assert third("a review", **padded)["input_ids"] == fresh_tokenizer("a review", **padded)["input_ids"]
    assert builds == [("gpt2", 0)]
    assert (
        load_model("tiny-gpt2", seed=1)
        .model.get_input_embeddings()
        .weight.ne(fresh_model.get_input_embeddings().weight)
        .any()
    )
