"""mattingkit: a notebook-first Kaggle/Colab experiment kit for natural image matting."""
__version__ = "0.1.0"
