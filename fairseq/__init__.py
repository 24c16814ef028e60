"""fairseq: sequence models trained from typed, composable configuration."""
__version__ = "0.1.0"
