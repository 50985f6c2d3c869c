"""Frozen backbones (``model.backbone``): the network whose features a head is trained on.

A backbone is one of

- a torchvision registry model, ``name: resnet18`` with ``weights: DEFAULT`` (or any weights
  name of that model; torchvision downloads them into ``torch.hub.get_dir()/checkpoints`` once)
  or ``weights: null`` (random initialisation seeded by ``init_seed``);
- a network class, torchvision's ``name`` or a dotted path to an alframe
  :class:`~alframe.models.base.ALNet` (``alframe.models.cnn.GalCNN``), with the weights of a
  ``checkpoint`` file holding its ``state_dict`` (e.g. a run's ``last_model.pt``);
- a TorchScript ``checkpoint`` (``torch.jit.save``), which carries its own architecture.

Anything else in a checkpoint file is refused with one line. The backbone's last ``nn.Linear``
(its classifier) becomes ``nn.Identity``: its features are the classifier's input, ``[B, D]``
(ResNet-18: 512; an alframe network: its penultimate embedding). It runs in eval mode without
gradients, so the features are a fixed function of the input.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alframe.errors import ConfigError
from alframe.models.base import ALNet


@dataclass(frozen=True)
class Preprocess:
    """What the backbone's input is made of, from the dataset's images ``[B, C, H, W]``.

    Attributes:
        pixels: undo the dataset's own normalisation first (values back in [0, 1]).
        channels: repeat a one-channel image to this many channels (None: as it is).
        resize: ``(H, W)`` bilinear resize (None: as it is).
        mean, std: per-channel normalisation applied last (None: none).
    """

    pixels: bool = False
    channels: int | None = None
    resize: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class FrozenBackbone(nn.Module):
    """A feature extractor: preprocessing, then the network up to its classifier's input.

    Args:
        net: the network with its classifier replaced by ``nn.Identity``.
        prep: the preprocessing.
        identity: what the backbone is (architecture, weights, classifier cut), for its fingerprint.
        data_mean, data_std: the dataset's per-channel normalisation (undone when ``prep.pixels``).
    """

    def __init__(self, net: nn.Module, prep: Preprocess, identity: dict, data_mean=None, data_std=None):
        super().__init__()
        self.net, self.prep, self.identity = net.eval(), prep, identity
        self.data_norm = None if data_mean is None or data_std is None else (
            torch.tensor(data_mean, dtype=torch.float32).view(1, -1, 1, 1),
            torch.tensor(data_std, dtype=torch.float32).view(1, -1, 1, 1))
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Stays in eval mode (BatchNorm running statistics, no dropout): frozen."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, D] float32`` for images ``x: [B, C, H, W]`` as the dataset gives them."""
        p = self.prep
        if x.ndim == 4:
            if p.pixels and self.data_norm is not None:
                m, s = (t.to(x.device) for t in self.data_norm)
                x = x * s + m
            if p.channels and x.shape[1] == 1 and p.channels != 1:
                x = x.expand(-1, p.channels, -1, -1)
            if p.resize and tuple(x.shape[-2:]) != tuple(p.resize):
                x = F.interpolate(x, size=tuple(p.resize), mode="bilinear", align_corners=False)
            if p.mean is not None:
                m = torch.tensor(p.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                s = torch.tensor(p.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                x = (x - m) / s
        return self.net(x).flatten(1).float()

    def fingerprint(self) -> str:
        """Hash of what the backbone computes: identity, preprocessing and every weight/buffer."""
        h = hashlib.sha1(json.dumps({**self.identity, "prep": asdict(self.prep),
                                     "data_norm": None if self.data_norm is None or not self.prep.pixels else
                                     [t.flatten().tolist() for t in self.data_norm]},
                                    sort_keys=True, default=str).encode())
        for k, v in sorted(self.net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        code = getattr(self.net, "code", None)  # TorchScript: its program too
        if isinstance(code, str):
            h.update(code.encode())
        return h.hexdigest()[:16]


def read_checkpoint(path: str | Path, what: str = "model.backbone.checkpoint") -> nn.Module | dict:
    """A TorchScript module or a state_dict (``{name: tensor}``) from ``path``.

    A Lightning checkpoint's ``state_dict`` is accepted, with a common ``net.``/``module.`` prefix
    removed. Loaded with ``weights_only=True``: a pickled module or any other object is refused.

    Raises:
        ConfigError: no such file, or a file that is neither (one line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}={path} does not exist")
    how = "save torch.save(net.state_dict(), path) or torch.jit.save(torch.jit.script(net), path)"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
        if scripted:
            try:
                with warnings.catch_warnings():  # torch 2.x: "torch.jit.load is deprecated"
                    warnings.simplefilter("ignore", FutureWarning)
                    return torch.jit.load(str(path), map_location="cpu")
            except Exception as e:  # noqa: BLE001 - torch raises many types; one line names it
                raise ConfigError(f"{what}={path} is a broken TorchScript file ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{what}={path} is neither a state_dict nor a TorchScript file (torch.load with "
                          f"weights_only=True refused it: {first[:200]}); {how}") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                          for k, v in obj.items()):
        raise ConfigError(f"{what}={path} holds a {type(obj).__name__}, not a state_dict (parameter name -> tensor) "
                          f"nor a TorchScript module; {how}")
    for prefix in ("net.", "module."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def cut_classifier(net: nn.Module) -> str:
    """Replace ``net``'s last ``nn.Linear`` (in registration order) by ``nn.Identity``.

    Returns:
        The replaced module's name (e.g. ``fc``, ``head.4``).

    Raises:
        ValueError: ``net`` has no ``nn.Linear``.
    """
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("it has no nn.Linear classifier to remove")
    parent_name, _, child = names[-1].rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, nn.Identity())
    return names[-1]


def _architecture(name: str, kwargs: dict, num_classes: int, input_shape: tuple[int, ...]) -> tuple[nn.Module, str]:
    """A freshly initialised network of ``name`` and its identity string."""
    import torchvision

    if "." in name:  # an alframe network class
        module, _, cls_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"model.backbone.name={name!r}: no such class ({e})") from e
        if not (isinstance(cls, type) and issubclass(cls, ALNet)):
            raise ConfigError(f"model.backbone.name={name!r} is not an alframe ALNet class")
        try:
            return cls(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs), f"class:{name}"
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.backbone.name={name!r} with model.backbone.kwargs={kwargs}: {e}") from e
    if name not in torchvision.models.list_models():
        raise ConfigError(f"model.backbone.name={name!r} is neither in torchvision's registry "
                          "(torchvision.models.list_models()) nor a dotted path to an alframe network class")
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs), f"torchvision:{name}"
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.backbone.name={name!r} with model.backbone.kwargs={kwargs}: {e}") from e


def _torchvision_weights(name: str, weights: str):
    """``(state_dict, weights enum member)`` of torchvision's ``weights`` for ``name``."""
    import torchvision

    try:
        member = torchvision.models.get_model_weights(name).verify(str(weights))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"model.backbone.weights={weights!r} is not a weights name of {name} (DEFAULT or one of "
                          f"{[w.name for w in torchvision.models.get_model_weights(name)]})") from e
    try:
        return member.get_state_dict(progress=False, check_hash=True), member
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, OSError, hash mismatch ...
        hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(member.url).name
        raise ConfigError(
            f"model.backbone: torchvision's {member} could not be fetched from {member.url} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}); download it on a machine with internet to {hub}, or pass the file as "
            f"model.backbone.checkpoint with model.backbone.weights=null") from e


def build_backbone(spec: Mapping, num_classes: int, input_shape: tuple[int, ...],
                   data_mean=None, data_std=None) -> FrozenBackbone:
    """The frozen backbone of ``model.backbone`` for inputs of ``input_shape``.

    Args:
        spec: ``name``, ``weights``, ``checkpoint``, ``kwargs``, ``init_seed`` and the
            preprocessing keys ``pixels``, ``channels``, ``resize``, ``mean``, ``std`` (null = automatic:
            torchvision weights bring their own resize, mean and std, on pixel values; a torchvision
            network gets 3 channels from grey images).
        num_classes: C of the data (the classifier is removed; some classes need it to build).
        input_shape: ``(C, H, W)`` of one dataset image.
        data_mean, data_std: the dataset's normalisation (``dataset`` extras), undone for ``pixels``.

    Raises:
        ConfigError: one line per problem: unknown name or weights, weights that cannot be
            fetched, a checkpoint that is neither a state_dict nor TorchScript or does not fit the
            architecture, contradicting keys, or inputs the network cannot take.
    """
    name, weights, ckpt = spec.get("name"), spec.get("weights"), spec.get("checkpoint")
    kwargs = dict(spec.get("kwargs") or {})
    if weights is not None and ckpt:
        raise ConfigError(f"model.backbone.weights={weights!r} and model.backbone.checkpoint={ckpt}: choose one "
                          "(model.backbone.weights=null loads the checkpoint)")
    loaded = read_checkpoint(ckpt) if ckpt else None
    auto = {}
    if isinstance(loaded, nn.Module):  # TorchScript carries its architecture
        if name:
            raise ConfigError(f"model.backbone.checkpoint={ckpt} is a TorchScript file, which carries its own "
                              f"architecture: set model.backbone.name=null (got {name!r})")
        net, identity = loaded, {"arch": "torchscript"}
    else:
        if not name:
            raise ConfigError("model.backbone.name is missing: a torchvision registry name (resnet18), a dotted "
                              "alframe network class with a state_dict checkpoint, or null with a TorchScript "
                              "checkpoint")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(spec.get("init_seed") or 0))  # weights=null: the same random backbone every run
            net, arch = _architecture(str(name), kwargs, num_classes, input_shape)
        identity = {"arch": arch, "kwargs": kwargs}
        if weights is not None:
            if not arch.startswith("torchvision:"):
                raise ConfigError(f"model.backbone.weights={weights!r} names torchvision weights, but "
                                  f"model.backbone.name={name!r} is not a torchvision model")
            loaded, member = _torchvision_weights(str(name), weights)
            t = member.transforms()
            crop = getattr(t, "crop_size", None)  # e.g. [224]: the size the weights were trained at
            auto = {"pixels": True, "resize": (int(crop[0]), int(crop[-1])) if crop else None,
                    "mean": tuple(t.mean) if hasattr(t, "mean") else None,
                    "std": tuple(t.std) if hasattr(t, "std") else None}
            identity["weights"] = str(member)
        try:
            cut = cut_classifier(net)
        except ValueError as e:
            raise ConfigError(f"model.backbone.name={name!r}: {e}") from e
        identity["cut"] = cut
        if loaded is not None:
            sd = {k: v for k, v in loaded.items() if k not in (f"{cut}.weight", f"{cut}.bias")}
            try:
                missing, unexpected = net.load_state_dict(sd, strict=False)
            except RuntimeError as e:
                raise ConfigError(f"model.backbone.checkpoint={ckpt or weights} does not fit {name}: "
                                  f"{' '.join(str(e).split())[:300]}") from e
            if missing or unexpected:
                raise ConfigError(f"model.backbone.checkpoint={ckpt or weights} does not fit {name}: {len(missing)} "
                                  f"missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}")
        if arch.startswith("torchvision:") and input_shape and input_shape[0] == 1:
            auto.setdefault("channels", 3)
    prep = _preprocess(spec, auto)
    backbone = FrozenBackbone(net, prep, identity, data_mean, data_std)
    try:
        out = backbone(torch.zeros(2, *input_shape))
    except RuntimeError as e:
        raise ConfigError(f"model.backbone ({identity['arch']}) cannot take inputs of shape {tuple(input_shape)} "
                          f"after its preprocessing {asdict(prep)}: {' '.join(str(e).split())[:200]}") from e
    if out.ndim != 2 or out.shape[0] != 2:
        raise ConfigError(f"model.backbone ({identity['arch']}) gives outputs of shape {tuple(out.shape)} for 2 "
                          "inputs: features must be [B, D]")
    return backbone


def _preprocess(spec: Mapping, auto: dict) -> Preprocess:
    def get(key):
        v = spec.get(key)
        return auto.get(key) if v is None else v

    resize = get("resize")
    if resize is not None:
        resize = (int(resize), int(resize)) if isinstance(resize, int) else tuple(int(v) for v in resize)
    mean, std = get("mean"), get("std")
    if (mean is None) != (std is None):
        raise ConfigError("model.backbone.mean and model.backbone.std go together: set both or neither")
    return Preprocess(pixels=bool(get("pixels") or False), channels=None if get("channels") is None
                      else int(get("channels")), resize=resize,
                      mean=None if mean is None else tuple(float(v) for v in mean),
                      std=None if std is None else tuple(float(v) for v in std))
