"""udas-ray: synthetic-to-real semantic segmentation by UDA + self-training on Ray.

The Python API (docs/USAGE.md: Python API), imported on first use so that ``import udas_ray`` stays light:

    load_config(path_or_name, overrides)   a validated config (udas_ray.config)
    run_pipeline(cfg)                      what ``udas-train`` runs; returns the summary
    load_run_model(run_dir, stage=None)    (model, metadata) of a finished stage
    load_model(model_pt)                   (model, metadata) of a model file
    read_image(path)                       uint8 (H, W, 3)
    predict_images(model, images, size)    trainId maps at each image's own size
"""

__version__ = "0.1.0"

_API = {
    "load_config": "udas_ray.config",
    "run_pipeline": "udas_ray.commands.self_train",
    "load_run_model": "udas_ray.commands.predict",
    "load_model": "udas_ray.checkpoints",
    "read_image": "udas_ray.data.images",
    "predict_images": "udas_ray.inference",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'udas_ray' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
