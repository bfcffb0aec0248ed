"""Scale-out: activation caching and SAE training split across two CPU processes on the gloo backend.

The processes are started the way ``torchrun`` starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment) and join through :func:`irmscope.distributed.init_distributed`, as the command line does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from irmscope.activations import ActivationStore, cache_activations
from irmscope.models import load_model
from irmscope.sae import SAE, TrainConfig, evaluate_sae, load_sae, train_sae

SITES = ["blocks.1.mlp.hook_post", "blocks.2.hook_resid_post"]
TEXTS = [
    f"Review {i}: the film was {'great' if i % 2 else 'dull'} and the cast {i} times better."
    for i in range(40)
]

WORKER = """
import sys, json, torch
torch.set_num_threads(1)
from irmscope.distributed import init_distributed, rank
from irmscope.activations import cache_activations
from irmscope.models import load_model
from irmscope.sae import TrainConfig, train_sae
init_distributed()
out, texts, sites = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
store = cache_activations(load_model("tiny-llama"), texts, sites, out + "/cache", max_length=24,
                          texts_per_shard=8, progress=False)
config = TrainConfig(d_sae=32, architecture="topk", k=4, tied=False, epochs=2, batch_size=16, log_every=4)
sae, log = train_sae(store, sites[0], config, out_dir=out + "/sae", seed=0, progress=False)
torch.save({k: v.clone() for k, v in sae.state_dict().items()}, f"{out}/rank{rank()}.pt")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_share_caching_and_train_one_sae(tmp_path):
    import json

    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path), json.dumps(TEXTS), json.dumps(SITES)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-2000:]

    # The shared cache is complete and holds exactly what one process caches.
    shared = ActivationStore(tmp_path / "cache")
    assert shared.complete and [s["index"] for s in shared.shards] == list(range(5))
    assert not list((tmp_path / "cache").glob("shards.rank*.json"))
    single = cache_activations(
        load_model("tiny-llama"), TEXTS, SITES, tmp_path / "single", max_length=24, texts_per_shard=8,
        progress=False,
    )  # fmt: skip
    assert shared.n_rows == single.n_rows and shared.manifest["widths"] == single.manifest["widths"]
    for entry in single.shards:
        ours, theirs = (load_file(str(Path(s.root) / entry["file"])) for s in (shared, single))
        assert ours.keys() == theirs.keys()
        assert all(torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-5) for k in ours)

    # Both ranks end with the same SAE (gradients averaged every step); rank 0 saved it once.
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_sae(tmp_path / "sae")
    assert torch.equal(saved.W_dec, rank0["W_dec"])
    log = json.loads((tmp_path / "sae" / "training_log.json").read_text())
    config = TrainConfig(d_sae=32, architecture="topk", k=4, tied=False, epochs=2, batch_size=16)
    one, one_log = train_sae(single, SITES[0], config, seed=0, progress=False)
    # Every rank takes as many steps as the rank with the fewest batches, so none waits on a missing peer.
    assert 0 < log["n_steps"] <= one_log.n_steps and log["loss"][-1] < log["loss"][0]
    two_fvu = evaluate_sae(saved, single, SITES[0]).fvu
    untrained = SAE(config.sae_config(single.width(SITES[0])), generator=torch.Generator().manual_seed(0))
    assert two_fvu < 1.5 * evaluate_sae(one, single, SITES[0]).fvu
    assert two_fvu < 0.9 * evaluate_sae(untrained, single, SITES[0]).fvu
