"""Elicit the reward a model internalised, word by word, and score it against the true reward.

* :mod:`.irm` — the main paper's IRM regression from SAE features (§4.3), faithful and ridge variants;
* :mod:`.lexicon_study` — that regression on one model with its controls (shuffled labels, random features);
* :mod:`.policy_shift` — the token-level implicit reward, log π_tuned/π_base per word;
* :mod:`.reward_study` — all of it on the tuned model and on its untuned base, side by side;
* :mod:`.agreement` — Kendall, Spearman and sign agreement with bootstrap intervals (§5.1);
* :mod:`.continuations` — activations of many words after shared contexts, one cached prefix pass each.
"""
