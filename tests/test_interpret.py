"""Feature evidence, the offline and the chat explainer (against a local stand-in server), dashboards."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from irmscope.activations import ActivationStore
from irmscope.activations.store import save_manifest, shard_name, write_shard
from irmscope.errors import IrmscopeError
from irmscope.interpret import (
    ChatExplainer,
    FeatureEvidence,
    OfflineExplainer,
    build_explainer,
    feature_evidence,
    interpret_features,
    token_values,
)
from irmscope.interpret.evidence import Context
from irmscope.report.interpretation import dashboard, explainer_name
from irmscope.sae import SAE, SAEConfig

SITE = "blocks.0.mlp.hook_post"


def identity_sae(width: int) -> SAE:
    """Feature i reads coordinate i (ReLU, untied), so activations are set by hand."""
    sae = SAE(SAEConfig(d_in=width, d_sae=width, tied=False))
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(width))
        sae.W_enc.copy_(torch.eye(width))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_token_values_read_the_lexicon_through_the_real_tokenizer(smollm2_tokenizer):
    values = token_values(smollm2_tokenizer, {"great": 3.1, "Awful": -2.0})
    ids = {w: smollm2_tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in ("great", "awful")}
    assert all(len(v) == 1 for v in ids.values())
    assert values[ids["great"][0]] == pytest.approx(3.1)
    assert values[ids["awful"][0]] == pytest.approx(-2.0)  # case-insensitive, like the reward
    assert values[smollm2_tokenizer(" the", add_special_tokens=False)["input_ids"][0]] == 0
    assert len(values) == len(smollm2_tokenizer)


@pytest.fixture
def hand_made_store(tmp_path, smollm2_tokenizer):
    """Two texts; feature 0 fires on ' great' (twice in text 0, once in text 1), feature 1 on ' the'."""
    texts = ["the film was great and great fun", "the plot was great"]
    rows = {"token_ids": [], "text_index": [], "position": [], SITE: []}
    for t, text in enumerate(texts):
        ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
        for p, token_id in enumerate(ids):
            word = smollm2_tokenizer.decode([token_id]).strip()
            act = [0.0, 0.0, 0.0]
            if word == "great":
                act[0] = 2.0 + t + p / 10  # strongest in text 1
            if word == "the":
                act[1] = 1.0
            rows["token_ids"].append(token_id)
            rows["text_index"].append(t)
            rows["position"].append(p)
            rows[SITE].append(act)
    tensors = {k: torch.tensor(v) for k, v in rows.items()}
    tensors[SITE] = tensors[SITE].float()
    write_shard(tmp_path / shard_name(0), tensors)
    n = len(rows["token_ids"])
    save_manifest(
        tmp_path,
        {"sites": [SITE], "positions": "all", "widths": {SITE: 3}, "complete": True,
         "shards": [{"index": 0, "file": shard_name(0), "rows": n, "first_text": 0, "n_texts": 2}]},
    )  # fmt: skip
    return ActivationStore(tmp_path)


def test_feature_evidence_finds_top_contexts_tokens_and_the_reward_link(hand_made_store, smollm2_tokenizer):
    values = token_values(smollm2_tokenizer, {"great": 3.1, "fun": 2.3})
    great, the, silent = feature_evidence(
        identity_sae(3),
        hand_made_store,
        SITE,
        features=[0, 1, 2],
        tokenizer=smollm2_tokenizer,
        values_by_token=values,
        n_contexts=5,
    )
    assert len(great.contexts) == 2  # one context per text, strongest text first
    first = great.contexts[0]
    assert first.tokens[first.peak].strip() == "great" and first.activations[first.peak] == max(
        first.activations
    )
    assert "".join(first.tokens).strip() == "the plot was great"  # the whole window of text 1
    assert great.top_tokens[0][0] == "great" and great.frequency == pytest.approx(3 / 11)
    assert great.reward_word_share == 1.0 and great.reward_correlation > 0.8
    assert the.reward_word_share == 0.0 and the.top_tokens[0][0] == "the"
    assert silent.contexts == [] and silent.frequency == 0.0


def _evidence(share: float) -> FeatureEvidence:
    return FeatureEvidence(
        site=SITE,
        feature=3,
        frequency=0.01,
        max_activation=2.0,
        top_tokens=[("great", 4.0), ("fine", 1.0)],
        contexts=[Context(tokens=[" a", " great", " film"], activations=[0.0, 2.0, 0.5], peak=1)],
        reward_correlation=0.4,
        reward_word_share=share,
    )


def test_offline_explainer_describes_and_classifies_by_measured_reward_link():
    explainer = OfflineExplainer()
    assert explainer.label.startswith("offline lexicon heuristic (not a language model)")
    description = explainer.explain(_evidence(0.75))
    assert "'great'" in description and "r = +0.40" in description and "75%" in description
    assert explainer.is_related(description, _evidence(0.75), "any reward")
    assert not explainer.is_related(description, _evidence(0.25), "any reward")


class _StandIn(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that records requests and answers from a script."""

    requests: list[dict] = []
    answers: list[str] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if body["model"] == "missing-model":
            self.send_response(404)
            self.end_headers()
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": type(self).answers.pop(0)}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = HTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _StandIn.requests, _StandIn.answers = [], []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_chat_explainer_speaks_the_openai_chat_protocol(stand_in, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    explainer = build_explainer("chat", stand_in + "/", "gpt-test", api_key_env="MY_KEY")
    _StandIn.answers = ["words of praise for a film.", "Yes, it is about positive sentiment."]
    description = explainer.explain(_evidence(0.5))
    assert description == "words of praise for a film."
    assert explainer.is_related(description, _evidence(0.5), "VADER sentiment")
    first, second = _StandIn.requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "gpt-test" and first["body"]["temperature"] == 0
    user = first["body"]["messages"][1]["content"]
    assert "' great'\t10" in user and "' a'\t0" in user  # Bills et al. format, activations scaled to 0-10
    question = second["body"]["messages"][1]["content"]
    assert "Reward function: VADER sentiment" in question and description in question
    assert "gpt-test" in explainer.label and "LLM" in explainer.label


def test_chat_explainer_errors_are_one_line_and_say_what_to_do(stand_in):
    explainer = ChatExplainer(stand_in, "gpt-test", api_key="")
    _StandIn.answers = ["Perhaps."]
    with pytest.raises(IrmscopeError, match="Yes or No"):
        explainer.is_related("d", _evidence(0.5), "r")
    with pytest.raises(IrmscopeError, match="HTTP 404; check interpret.model"):
        ChatExplainer(stand_in, "missing-model").explain(_evidence(0.5))
    with pytest.raises(IrmscopeError, match="unreachable.*interpret.base_url"):
        ChatExplainer("http://127.0.0.1:9/v1", "m", timeout=2).explain(_evidence(0.5))
    with pytest.raises(IrmscopeError, match="interpret.base_url and interpret.model"):
        build_explainer("chat", None, None)
    with pytest.raises(IrmscopeError, match="unknown explainer"):
        build_explainer("gpt", None, None)


def test_interpret_features_explains_shared_features_and_lists_the_related(
    hand_made_store, smollm2_tokenizer
):
    small = identity_sae(3)
    large = SAE(SAEConfig(d_in=3, d_sae=6))
    with torch.no_grad():
        large.W_dec.copy_(torch.cat([torch.eye(3), torch.eye(3)[[1, 2, 0]] * -1]))
    result = interpret_features(
        {SITE: small},
        {SITE: large},
        store=hand_made_store,
        tokenizer=smollm2_tokenizer,
        lexicon={"great": 3.1},
        reward_description="VADER",
        explainer=OfflineExplainer(),
        top_k=2,
    )
    assert result["n_explained"] == 2 and [f["pair_cosine"] for f in result["features"]] == [1.0, 1.0]
    assert result["related"] == {SITE: [0]} and result["n_related"] == 1
    json.dumps(result)  # JSON-ready
    page = dashboard(result["features"][0], explainer_name(result["explainer"]))
    assert "offline lexicon heuristic (not a language model): " in page
    assert "related to the reward" in page and "rgba(255,120,0,1.00)" in page and "&#x27;" in page


def test_feature_evidence_needs_every_position(hand_made_store, smollm2_tokenizer):
    hand_made_store.manifest["positions"] = "last"
    with pytest.raises(IrmscopeError, match="positions='all'"):
        feature_evidence(identity_sae(3), hand_made_store, SITE, features=[0], tokenizer=smollm2_tokenizer)
