"""Reading a run folder back: config, data, pool state and the last trained network.

A run folder (Hydra's run dir) holds ``config.yaml`` (the resolved config), ``pool_state.npz``
(who is labelled, in which round, with which label), ``last_model.pt`` (state dict of the last
trained network) and ``queries.csv``. :func:`load_run` rebuilds the dataset and the network from
these files, for export (:mod:`alframe.export.dataset`) and prediction (:mod:`alframe.export.predict`); it
works on finished, waiting and interrupted runs alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from alframe.data.base import ALData, load_data
from alframe.errors import RunFolderError
from alframe.models.base import ALNet
from alframe.rundir.state import PoolState

CONFIG_FILE = "config.yaml"
MODEL_FILE = "last_model.pt"  # the name alframe.loop.experiment saves the last round's network under

#: oracles that simulate an annotator; every other oracle is a person (or their tool)
SIMULATED_ORACLES = {"alframe.oracles.stored.StoredOracle": "stored", "alframe.oracles.noisy.NoisyOracle": "noisy"}




@dataclass
class LoadedRun:
    """One run folder, read back.

    Attributes:
        run_dir: the folder.
        cfg: its resolved config (``config.yaml``).
        data: the dataset rebuilt from ``cfg.dataset``.
        state: the pool state (``labels [N]``, ``labelled_round [N]``, ``available [N]``).
        net: the last trained network in eval mode, or None when no round has been trained yet.
    """

    run_dir: Path
    cfg: DictConfig
    data: ALData
    state: PoolState
    net: ALNet | None

    @property
    def label_source(self) -> str:
        """``human`` for labels a person gave, ``stored``/``noisy`` for a simulated oracle."""
        return SIMULATED_ORACLES.get(str(self.cfg.oracle.get("_target_")), "human")


def read_config(run_dir: str | Path) -> DictConfig:
    """The resolved config saved in ``run_dir/config.yaml``.

    Raises:
        RunFolderError: ``run_dir`` is not a folder or has no ``config.yaml``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist (pass a folder printed as 'Run folder:' "
                             "by alframe, e.g. outputs/runs/<date>/<time>)")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunFolderError(f"{path} not found: {run_dir} is not an alframe run folder (or the run stopped "
                             "before it started)")
    return OmegaConf.load(path)


def load_net(cfg: DictConfig, data: ALData, path: Path) -> ALNet:
    """The network of ``cfg.model.net`` for ``data`` with the weights saved at ``path``, in eval mode."""
    from alframe.training.trainer import build_net  # the loop's own builder: same architecture as was trained

    net = build_net(cfg, data.num_classes, data.input_shape)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def load_run(run_dir: str | Path, need_model: bool = False) -> LoadedRun:
    """Read ``run_dir`` back (see :class:`LoadedRun`).

    Args:
        run_dir: an alframe run folder.
        need_model: raise when no network has been trained yet.

    Raises:
        RunFolderError: missing ``config.yaml``/``pool_state.npz`` (or ``last_model.pt`` with
            ``need_model``), or a pool state whose size differs from the rebuilt dataset.
        DatasetError: the dataset cannot be loaded (e.g. its folder moved).
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if not PoolState.exists(run_dir):
        raise RunFolderError(f"{run_dir} has no pool_state.npz: no labels were recorded in this run yet")
    state = PoolState.load(run_dir)
    data = load_data(cfg.dataset)
    if data.n_train != state.n:
        raise RunFolderError(f"{run_dir}: the pool state covers {state.n} samples but dataset "
                             f"{data.name!r} now has {data.n_train}: the data changed since the run")
    saved = state.progress.dataset_fingerprint
    if saved:
        from alframe.errors import StateMismatchError
        from alframe.rundir.resume import check_same_data

        try:
            check_same_data(run_dir, saved, data)
        except StateMismatchError as e:
            raise RunFolderError(f"{run_dir}: the dataset changed since the run ({e}); labels would land on the "
                                 "wrong samples") from e
    from alframe.training.frozen import frozen_data

    data = frozen_data(cfg, data, run_dir)  # model.backbone: the run's cached features
    model_path = run_dir / MODEL_FILE
    if need_model and not model_path.is_file():
        raise RunFolderError(f"{model_path} not found: no model has been trained in this run yet")
    net = load_net(cfg, data, model_path) if model_path.is_file() else None
    return LoadedRun(run_dir=run_dir, cfg=cfg, data=data, state=state, net=net)
