"""Scorers usable on any wav files, and the ``clsvc evaluate`` suite.

Scorers (no dependency on the suite):

* :mod:`.similarity` — centroids and cosines of Resemblyzer d-vectors (:mod:`clsvc.dvector`)
* :mod:`.mcd` — mel-cepstral distortion on audio (WORLD + SPTK) and on log-mel features
* :mod:`.asr` — pocketsphinx transcription, WER / CER with jiwer
* :mod:`.quality` — DNSMOS P.835 (no reference), wide-band PESQ and STOI (time-aligned reference)
* :mod:`.pitch` — F0 tracks (WORLD) and F0 error after DTW: log-F0 RMSE in cents, correlation, V/UV
* :mod:`.probes` — fresh speaker classifiers on frozen C_x / S_x codes
* :mod:`.tsne` — t-SNE of speaker codes with a silhouette score
* :mod:`.stats` — means and shares with 95% confidence intervals

The suite, each module importing only those above it:

* :mod:`.metrics` — the metric table, audio kinds and conditions, per-group summaries
* :mod:`.protocol` — the pair protocol and its CSV pair list
* :mod:`.scoring` — cached real audio, the scoring context, per-audio scores, probes and t-SNE
* :mod:`.report` — ``report.md`` and the figures
* :mod:`.compare` — the comparison of an experiment's systems
* :mod:`.suite` — ``clsvc evaluate``: conversion, scoring and the report folder
"""
