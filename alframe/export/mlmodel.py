"""A trained network people can use outside alframe: preprocessing record and MLflow model.

The run's last network is saved as an MLflow ``pyfunc`` model that wraps the PyTorch network
(state dict + its ``model.net`` config) with the preprocessing it was trained with, so that::

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(images)        # images: float32 [N, C, H, W], pixel values in [0, 1]
                                 # -> array of N class names

The model carries its input signature (``float32 [-1, C, H, W]``), the class names and the
preprocessing (per-channel mean/std, image size, channels, crop) as metadata, and a copy of the
``alframe`` package (``code_paths``) so that loading needs only torch, hydra-core and mlflow.
Every run folder also gets ``preprocessing.json`` (the same record), which ``alframe-predict``
reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from alframe.data.base import ALData
from alframe.models.base import ALNet

if TYPE_CHECKING:  # the checked settings (alframe.config.settings) or a composed config
    from alframe.config.settings import Settings

PREPROCESSING_FILE = "preprocessing.json"
MODEL_DIR = "model"  # local copy in the run folder and the artifact path in MLflow


@dataclass
class Preprocessing:
    """How images become model input, and what the outputs mean.

    Attributes:
        class_names: ``[C]`` names of the outputs.
        input_shape: ``(channels, height, width)`` the network takes.
        mean, std: per-channel normalisation of pixel values in [0, 1] (``[channels]``), or None
            when the data was not normalised.
        crop: image files are resized on their short side and centre-cropped (True) or stretched.
        pixel_range: what 1.0 means in the input (``"[0, 1] = pixel / 255"`` for image files).
    """

    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float] | None
    std: list[float] | None
    crop: bool = True
    pixel_range: str = "[0, 1] = pixel / 255"

    @classmethod
    def from_data(cls, data: ALData, dataset_cfg: DictConfig | None = None) -> Preprocessing:
        """The record of ``data`` (mean/std from ``data.extras``; crop from ``dataset.crop``)."""
        crop = True if dataset_cfg is None else bool(dataset_cfg.get("crop", True))
        pixel_range = "[0, 1] = value / 16" if data.name == "digits" else "[0, 1] = pixel / 255"
        if len(data.input_shape) == 1:  # dataset=features, model.backbone: feature vectors, standardised here
            pixel_range = "feature vectors as in the dataset's files (before standardisation)"
        mean, std = data.extras.get("mean"), data.extras.get("std")
        return cls(class_names=[str(c) for c in data.class_names], input_shape=tuple(int(v) for v in data.input_shape),
                   mean=None if mean is None else [float(v) for v in mean],
                   std=None if std is None else [float(v) for v in std], crop=crop, pixel_range=pixel_range)

    def save(self, path: Path) -> Path:
        """Write the record as JSON to ``path``; returns ``path``."""
        Path(path).write_text(json.dumps(asdict(self), indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        """Read a record written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
        """
        d = json.loads(Path(path).read_text())
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values ``[N, C, H, W]`` in [0, 1] -> network input (per-channel ``(x - mean) / std``).

        Raises:
            ValueError: ``x`` is not ``[N, C, H, W]`` with the record's ``input_shape``.
        """
        if x.ndim != 1 + len(self.input_shape) or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"{'images' if len(self.input_shape) == 3 else 'features'} must be "
                             f"[N, {', '.join(map(str, self.input_shape))}] {self.pixel_range}, got shape {tuple(x.shape)}")
        x = x.float()
        if self.mean is None:
            return x
        shape = (1, -1) + (1,) * (len(self.input_shape) - 1)  # per channel, or per feature
        m = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        s = torch.tensor(self.std, dtype=torch.float32).view(shape)
        return (x - m) / s

    def read_files(self, paths: Sequence[str | Path], workers: int = 4) -> tuple[torch.Tensor, list[int], list]:
        """Decode image files as the training images were (channels, size, crop).

        Returns:
            ``(pixels [M, C, H, W] float32 in [0, 1], ok [M] positions in paths, bad [(path, reason)])``.
        """
        from alframe.data.folders import read_images

        c, h, w = self.input_shape
        x, ok, bad = read_images(paths, channels=c, image_size=[h, w], crop=self.crop, workers=workers)
        return x.float() / 255.0, ok, bad


@torch.no_grad()
def predict_pixels(net: ALNet, prep: Preprocessing, pixels: torch.Tensor | np.ndarray,
                   batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Class and confidence for images.

    Args:
        net: trained network.
        prep: its preprocessing.
        pixels: ``[N, C, H, W]`` pixel values in [0, 1].
        batch_size: images per forward pass.

    Returns:
        ``(classes [N] int64, confidence [N] float32)``: arg-max class and its softmax probability.

    Raises:
        ValueError: wrong image shape.
    """
    x = prep.normalise(torch.as_tensor(np.asarray(pixels, dtype=np.float32)))
    net.eval()
    out_c, out_p = [], []
    for s in range(0, len(x), batch_size):
        p = torch.softmax(net(x[s:s + batch_size]).float(), dim=1)
        conf, cls = p.max(dim=1)
        out_c.append(cls)
        out_p.append(conf)
    if not out_c:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    return torch.cat(out_c).numpy().astype(np.int64), torch.cat(out_p).numpy().astype(np.float32)


def write_preprocessing(run_dir: Path, cfg: Settings | DictConfig, data: ALData) -> Path:
    """Save ``run_dir/preprocessing.json`` (see :class:`Preprocessing`); returns its path."""
    return Preprocessing.from_data(data, cfg.dataset).save(Path(run_dir) / PREPROCESSING_FILE)


try:  # MLflow is a dependency; the class is defined only with it importable
    import mlflow.pyfunc

    class AlframeClassifier(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc model: images ``float32 [N, C, H, W]`` in [0, 1] -> ``[N]`` class names.

        Artifacts: ``weights`` (state dict), ``net_config`` (the run's ``model.net`` YAML),
        ``preprocessing`` (:class:`Preprocessing` JSON).
        """

        _skip_type_hint_validation = True  # the signature is explicit; no type-hint validation (or advice)

        def load_context(self, context) -> None:
            """Rebuild the network from its config and weights."""
            from hydra.utils import instantiate

            self.prep = Preprocessing.load(Path(context.artifacts["preprocessing"]))
            net_cfg = OmegaConf.load(context.artifacts["net_config"])
            self.net = instantiate(net_cfg, num_classes=len(self.prep.class_names),
                                   input_shape=tuple(self.prep.input_shape))
            self.net.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True))
            self.net.eval()

        def predict(self, context, model_input, params=None) -> np.ndarray:
            """Class names ``[N]`` (str) for ``model_input: [N, C, H, W]`` pixel values in [0, 1];
            ``params={"output": "confidence"}`` returns the arg-max probabilities ``[N]`` instead."""
            x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
            cls, conf = predict_pixels(self.net, self.prep, x.astype(np.float32))
            if (params or {}).get("output") == "confidence":
                return conf
            return np.asarray([self.prep.class_names[c] for c in cls], dtype=object)
except ImportError:  # pragma: no cover
    AlframeClassifier = None  # type: ignore[assignment,misc]


@contextlib.contextmanager
def _quiet_mlflow():
    """Silence MLflow's notices while saving (progress bars, the cloudpickle advice)."""
    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    logger.setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def save_mlflow_model(path: Path, cfg: Settings | DictConfig, prep: Preprocessing, net: ALNet) -> Path:
    """Write ``net`` as an MLflow pyfunc model folder at ``path`` (replaced if it exists).

    Returns:
        ``path``.
    """
    import mlflow.pyfunc
    import torchvision
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec


    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    with tempfile.TemporaryDirectory() as tmp, _quiet_mlflow():
        tmp = Path(tmp)
        weights = tmp / "weights.pt"
        torch.save(net.state_dict(), weights)
        net_cfg = tmp / "net.yaml"
        OmegaConf.save(cfg.model.net, net_cfg, resolve=True)
        prep_path = prep.save(tmp / PREPROCESSING_FILE)
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *prep.input_shape))]),
                                   outputs=Schema([ColSpec("string")]))
        mlflow.pyfunc.save_model(
            str(path), python_model=AlframeClassifier(),
            artifacts={"weights": str(weights), "net_config": str(net_cfg), "preprocessing": str(prep_path)},
            code_paths=[str(Path(__file__).resolve().parents[1])], signature=signature,  # the alframe package
            input_example=np.zeros((1, *prep.input_shape), dtype=np.float32),
            # explicit requirements: MLflow would otherwise infer them in a slow subprocess
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"torchvision=={torchvision.__version__.split('+')[0]}",
                              "hydra-core>=1.3,<1.4", "omegaconf>=2.3,<2.4", "numpy", "pillow", "scikit-learn"],
            metadata={"class_names": prep.class_names, "preprocessing": asdict(prep),
                      "input": f"float32 [N, {', '.join(map(str, prep.input_shape))}] pixel values {prep.pixel_range}",
                      "output": "[N] class names"})
    return path


def log_model(tracker, run_dir: Path, cfg: Settings | DictConfig, data: ALData, net: ALNet,
              artifact_path: str = MODEL_DIR) -> str:
    """Save the model into ``run_dir/<artifact_path>`` and log it as artifacts of the tracker's run.

    Args:
        tracker: an :class:`alframe.tracking.run.Tracker`.
        artifact_path: ``model`` for the final model, ``models/round_<r>`` for every round's.

    Returns:
        The model URI ``runs:/<run_id>/<artifact_path>``.
    """
    local = save_mlflow_model(Path(run_dir) / artifact_path, cfg, Preprocessing.from_data(data, cfg.dataset), net)
    tracker.client.log_artifacts(tracker.run_id, str(local), artifact_path)
    return f"runs:/{tracker.run_id}/{artifact_path}"
