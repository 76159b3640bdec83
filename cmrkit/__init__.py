"""cmrkit: reproduction kit for generative models of cardiac MRI (Cheng 2025)."""

__version__ = "0.1.0"
