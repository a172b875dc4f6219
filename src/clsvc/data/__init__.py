"""Corpus readers, preprocessing, the manifest and the training crop sampler."""

from .corpora import Utterance, read_corpus
from .dataset import Batch, FeatureSet
from .manifest import Entry, read_manifest
from .preprocess import SplitSpec, preprocess

__all__ = ["Batch", "Entry", "FeatureSet", "SplitSpec", "Utterance", "preprocess", "read_corpus",
           "read_manifest"]
