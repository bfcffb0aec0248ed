"""Typed configuration: presets, overrides, and one-line errors for typos."""

import json

import pytest

from irmscope.config import PRESETS, load_config
from irmscope.errors import IrmscopeError


def test_presets_resolve():
    for name in PRESETS:
        assert load_config(name).preset == name
    assert load_config("smoke").model.name == "tiny-llama"
    assert load_config("demo").model.name == "smollm2-135m"
    assert load_config("paper").data.n_prompts == 1000


def test_overrides_from_set_and_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"generation": {"max_new_tokens": 5}}))
    config = load_config(
        "smoke", path, ["data.n_prompts=7", "reward.spec=lexicon:x.tsv", "activations.layers=[0]"]
    )
    assert config.generation.max_new_tokens == 5
    assert config.data.n_prompts == 7
    assert config.reward.spec == "lexicon:x.tsv"
    assert config.activations.layers == [0]
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("seed: 3\nmodel:\n  name: tiny-gpt2\n")
    assert load_config("smoke", yaml_path).model.name == "tiny-gpt2"


def test_misspelt_key_names_it_and_the_valid_keys():
    with pytest.raises(IrmscopeError, match=r"unknown config key 'data.n_promts'.*n_prompts") as err:
        load_config("demo", overrides=["data.n_promts=3"])
    assert "\n" not in str(err.value)
    with pytest.raises(IrmscopeError, match="unknown config key 'sed'.*seed"):
        load_config("demo", overrides=["sed=3"])


def test_bad_values_and_presets(tmp_path):
    with pytest.raises(IrmscopeError, match="data.n_prompts"):
        load_config("demo", overrides=["data.n_prompts=0"])
    with pytest.raises(IrmscopeError, match="unknown preset"):
        load_config("fast")
    with pytest.raises(IrmscopeError, match="does not exist"):
        load_config("demo", tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(IrmscopeError, match="could not be parsed"):
        load_config("demo", tmp_path / "bad.json")


def test_overrides_never_change_the_preset_for_later_loads():
    load_config("smoke", overrides=["tune.algorithm=none", "sae.k=3"])
    again = load_config("smoke")
    assert again.tune.algorithm == "grpo" and again.sae.k == load_config("smoke").sae.k != 3


def test_tuning_against_a_target_needs_its_settings_together():
    config = load_config("demo", overrides=["tune.target_gain=0.5", "tune.max_steps=84", "tune.eval_every=7"])
    assert config.tune.step_cap == 84 and config.tune.eval_prompts == 32
    assert load_config("demo").tune.step_cap == load_config("demo").tune.steps  # fixed steps by default
    assert load_config("demo", overrides=["tune.scale_rewards=none"]).tune.scale_rewards == "none"
    cases = [
        (["tune.target_gain=0.5"], r"tune.target_gain needs tune.max_steps .* and tune.eval_every"),
        (["tune.max_steps=40"], r"tune.max_steps is used only with tune.target_gain"),
        (["tune.target_gain=0.5", "tune.max_steps=5", "tune.eval_every=6"], r"eval_every \(6\) exceeds"),
        (["tune.eval_prompts=1"], r"config value 'tune.eval_prompts'"),
        (["tune.target_gain=nan"], r"config value 'tune.target_gain'"),
        (["tune.eval_every=0"], r"config value 'tune.eval_every'"),
        (["tune.algorithm=rloo", "tune.scale_rewards=none"], r"tune.scale_rewards applies to GRPO only"),
        (["tune.scale_rewards=std"], r"config value 'tune.scale_rewards'"),
    ]
    for overrides, message in cases:
        with pytest.raises(IrmscopeError, match=message) as err:
            load_config("demo", overrides=overrides)
        assert "\n" not in str(err.value) and "(got {" not in str(err.value)
