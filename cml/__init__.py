"""cml: continual relation extraction with curriculum-meta learning.

`cml.run(config)` and `cml.load_results(run_dir)` are the Python API (cml/api.py); they are
imported on first use, so `import cml` stays light."""

__version__ = "0.1.0"
__all__ = ["Results", "load_results", "run"]


def __getattr__(name: str):
    if name in __all__:
        from cml import api

        return getattr(api, name)
    raise AttributeError(f"module 'cml' has no attribute {name!r}")
