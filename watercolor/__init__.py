"""Watercolor: self-hosted batch image upscaling with pretrained super-resolution models."""

__version__ = "0.1.0"
