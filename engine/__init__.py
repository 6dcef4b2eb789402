"""charrnn-tui's engine: pure PyTorch, no UI. Corpus, vocab, batching, models, training, sampling."""

import warnings

# torch warns at import when NumPy is absent; the engine never uses NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
