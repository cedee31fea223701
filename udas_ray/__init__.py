"""udas-ray: synthetic-to-real semantic segmentation by UDA + self-training on Ray."""

__version__ = "0.1.0"
