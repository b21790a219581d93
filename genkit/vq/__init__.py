"""VQ image tokenizers: quantizers (STE, rotation trick, SimVQ, FSQ) and the conv autoencoder around them."""

from .quantizers import ESTIMATORS, FSQ, QuantizerOutput, VectorQuantizer, kmeans, rotate_to
from .tokenizer import QUANTIZERS, VQTokenizer

__all__ = ["ESTIMATORS", "FSQ", "QuantizerOutput", "VectorQuantizer", "kmeans", "rotate_to", "QUANTIZERS",
           "VQTokenizer"]
