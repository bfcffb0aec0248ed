# The tuning recipe of the planted replicates and the noise null (sourced by their scripts). Fixed before any
# of their seeds was tuned: stronger than the demo's VADER recipe (learning rate 1e-3 instead of 5e-4, KL
# coefficient 0.02 instead of 0.1, 40 steps instead of 28) because a planted lexicon of 200 neutral words
# installs slowly. Everything else is the tune section's defaults (src/irmscope/config.py, TuneSection).
TUNE_SETTINGS=(--set steps=40 --set learning_rate=1e-3 --set beta=0.02)
