"""cml: continual relation extraction with curriculum-meta learning."""

__version__ = "0.1.0"
