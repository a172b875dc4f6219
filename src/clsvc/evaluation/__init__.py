"""Scorers usable on any wav files, and the ``clsvc evaluate`` suite.

* :mod:`.similarity` — Resemblyzer speaker embeddings, centroids, cosine (the paper's tool)
* :mod:`.mcd` — mel-cepstral distortion on audio (WORLD + SPTK) and on log-mel features
* :mod:`.asr` — pocketsphinx transcription, WER / CER with jiwer
* :mod:`.probes` — fresh speaker classifiers on frozen C_x / S_x codes
* :mod:`.tsne` — t-SNE of speaker codes with a silhouette score
* :mod:`.stats` — means and shares with 95% confidence intervals
* :mod:`.suite` — the pair protocol, conversion, scoring and the report folder
"""
