"""Structured config schemas: the one place where the types, defaults and allowed ranges of the
``loop``, ``trainer``, ``mlflow`` and ``paths`` groups live.

Each dataclass is stored in Hydra's ConfigStore as the group's ``default`` option (``trainer:
cpu``/``gpu`` extend the ``trainer`` schema), so Hydra rejects unknown keys and wrong types
when the config is composed. Ranges are field metadata (``ge``/``le``: a number, or the name
of another key of the same group), checked by :func:`check_ranges` before any training, with
messages that name key, value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


def _f(default: Any, ge: int | float | str | None = None, le: int | float | None = None,
       low_open: bool = False) -> Any:
    """A dataclass field with a range: ``ge`` (or ``> ge`` when ``low_open``) and ``le``."""
    kw = {"default_factory": lambda: dict(default)} if isinstance(default, dict) else {"default": default}
    return field(metadata={"ge": ge, "le": le, "low_open": low_open}, **kw)


@dataclass
class LoopConfig:
    """``loop``: the active-learning loop.

    Attributes:
        initial_size: labels in the initial labelled set (round 0), chosen at random.
        initial_balanced: class-balanced initial set (simulation only: uses stored labels).
        initial_by_strategy: the run's strategy chooses the initial set too (a cold start), from
            the outputs of the round-0 network before any training; only strategies that need
            no trained model (``cold_start``: random, kmeans, typiclust, probcover, a
            budget_switch starting with one). Meant for fixed features (``ssl=simclr``,
            ``model=frozen``, ``dataset=features``), whose embeddings need no labels.
        query_size: query (acquisition) batch size per round, in labels.
        rounds: query rounds after round 0 (null = until the budget or the pool run out).
        budget: total number of labels, initial set included (null = no cap).
        target_accuracy: stop once ``target_metric`` reaches this accuracy in (0, 1]; null = off.
        target_metric: ``test_accuracy`` or ``val_accuracy`` (needs a validation split).
        pseudo_label_threshold: CEAL: pool samples with confidence >= this train as
            pseudo-labels (not budget); null = off.
        pool_subset: score only a random subset of this many pool samples per round.
        consistent_dropout: null keeps each MC-dropout strategy's own ``strategy.consistent_dropout``;
            true / false sets it for whichever MC-dropout strategy the run uses (a paper comparison
            that scores every strategy the same way: ``strategy=batchbald,bald``). Strategies
            without MC dropout ignore it.
        resume: true continues the newest run of this config; or a run folder; false starts anew.
        eval_batch_size: samples per forward pass for scoring and evaluation.
        stop_kappa: stop once Cohen's kappa between successive models' stop-set predictions is
            at least this in ``stop_window`` rounds in a row (Bloodgood & Vijay-Shanker 2009);
            null = never (kappa is still logged). Checked by :mod:`alframe.loop.stopping`.
        stop_window: rounds in a row for ``stop_kappa``.
        stop_set_size: pool samples drawn once (seeded) as the stop set, scored every round;
            0 = off.
        machine_label_evidence: simulations: log the count and accuracy of machine labels per
            confidence threshold every round (one pass over the pool).
    """

    initial_size: int = _f(20, ge=1)
    initial_balanced: bool = False
    initial_by_strategy: bool = False
    query_size: int = _f(10, ge=1)
    rounds: Optional[int] = _f(15, ge=0)
    budget: Optional[int] = _f(None, ge="initial_size")
    target_accuracy: Optional[float] = _f(None, ge=0.0, le=1.0, low_open=True)
    target_metric: str = "test_accuracy"
    pseudo_label_threshold: Optional[float] = _f(None, ge=0.0, le=1.0, low_open=True)
    pool_subset: Optional[int] = _f(None, ge="query_size")
    consistent_dropout: Optional[bool] = None
    resume: Any = False
    eval_batch_size: int = _f(512, ge=1)
    stop_kappa: Optional[float] = None
    stop_window: int = 3
    stop_set_size: int = 1000
    machine_label_evidence: bool = True


@dataclass
class TrainerConfig:
    """``trainer``: the ``pytorch_lightning.Trainer`` of each round's fresh model.

    Every key but ``early_stopping_patience`` and ``extra`` is a Trainer argument.

    Attributes:
        accelerator: ``cpu``, ``gpu``, ``mps`` or ``auto``.
        devices: devices per run (an int, ``-1``/``"auto"`` for all, or a list of ids). More than one
            trains with Lightning's DDP in processes spawned per round (``strategy``).
        strategy: Lightning strategy, default ``auto``. With several devices ``auto`` means
            ``ddp_spawn``; ``ddp`` (which re-launches the command line, so the whole AL loop
            would run once per device) is refused (:func:`alframe.training.trainer.build_trainer`).
        precision: e.g. ``32-true``, ``16-mixed``.
        max_epochs: epochs per round at most.
        min_epochs: epochs per round at least.
        threads: CPU threads of torch (intra-op) for training, scoring and evaluation; null =
            PyTorch's default (one per core, or ``OMP_NUM_THREADS``). 1 by default: on a busy 2-core
            machine two threads made the default run 6x slower (368 s vs 61 s), while on an idle one
            they gain at most 2x. Results depend on the thread count (floating-point order).
        early_stopping_patience: epochs without ``val_accuracy`` gain before stopping (needs a
            validation split); null = off.
        deterministic: torch deterministic algorithms.
        protocol: a label naming the training protocol: ``epochs``, ``steps``, ``batchbald2019``
            or ``gal2017`` (:mod:`alframe.training.protocols`).
        steps_per_round: a fixed number of gradient steps per round (replaces max_epochs); null = off.
        epoch_samples: samples per epoch drawn from the labelled set with repetition; null = one pass.
        restore_best: load the best ``val_accuracy`` epoch's weights before scoring and testing.
        weight_decay_per_label: c of Keras' ``l2(c / N)`` on ``weight_decay_params``, N = labels
            of the round (Gal et al. 2017); null = off.
        weight_decay_params: parameter names (fnmatch patterns) the scaled weight decay applies to.
        extra: any other Trainer keyword arguments, e.g. ``+trainer.extra.max_steps=200``.
    """

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int = _f(50, ge=1)
    min_epochs: int = _f(1, ge=0)
    early_stopping_patience: Optional[int] = _f(None, ge=1)
    threads: Optional[int] = _f(1, ge=1)
    deterministic: Any = False
    protocol: str = "epochs"
    steps_per_round: Optional[int] = _f(None, ge=1)
    epoch_samples: Optional[int] = _f(None, ge=1)
    restore_best: bool = False
    weight_decay_per_label: Optional[float] = _f(None, ge=0.0)
    weight_decay_params: list[str] = field(default_factory=list)
    extra: dict[str, Any] = _f({})


@dataclass
class MlflowConfig:
    """``mlflow``: where runs are tracked.

    Attributes:
        tracking_uri: null = ``sqlite:///<paths.output_root>/mlflow.db`` (no server needed), or
            any MLflow tracking URI (``http://host:5000``, ``sqlite:///...``).
        experiment_name: MLflow experiment of the run.
        run_name: display name of the run (a random suffix keeps names unique).
        ui_url: address of the MLflow UI in the printed links; null: the tracking server itself
            for http(s) tracking URIs, else http://127.0.0.1:5000 (what ``make ui`` serves).
        log_model: log the final model as an MLflow pyfunc model (artifact ``model/``).
        log_model_every_round: also log each round's model as ``models/round_<r>``.
    """

    tracking_uri: Optional[str] = None
    experiment_name: str = "alframe"
    run_name: Optional[str] = "${strategy.name}-${model.name}-${dataset.name}-seed${seed}"
    ui_url: Optional[str] = None
    log_model: bool = True
    log_model_every_round: bool = False


@dataclass
class PathsConfig:
    """``paths``.

    Attributes:
        output_root: Hydra run folders and the default MLflow store (relative to the cwd).
        data_dir: where torchvision datasets are downloaded / looked for.
    """

    output_root: str = "outputs"
    data_dir: str = "data"


@dataclass
class ModelRanges:
    """Ranged keys every ``model`` option has (the rest is each model's YAML).

    Attributes:
        batch_size: labelled samples per training step.
    """

    batch_size: int = _f(32, ge=1)


@dataclass
class SSLConfig:
    """``ssl``: self-supervised features of the pool, trained once before round 0 and given to the
    frozen-feature mode as its backbone (``ssl=simclr``; :mod:`alframe.training.ssl`).

    Attributes:
        method: ``simclr`` (Chen et al. 2020, with lightly's NT-Xent loss and projection head).
        encoder: ``auto`` (``alframe.models.ssl.ConvEncoder`` for grey images, the CIFAR-stem
            ``alframe.models.resnet.ResNet18`` for colour), or the dotted path of an alframe ALNet
            class; its penultimate embedding is the feature vector.
        encoder_kwargs: more arguments of the encoder class.
        dim: feature size D (ConvEncoder's last width; another encoder must give this size);
            null = the encoder's own (ConvEncoder: 128).
        epochs: passes over the pool.
        batch_size: images per step (each gives two views; the others are its negatives).
        temperature: of the NT-Xent loss.
        proj_hidden: hidden width of the projection head (null = D).
        proj_dim: output size of the projection head (the loss's space, discarded afterwards).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: the encoder's own seed, not the run's, so every job of a sweep shares one encoder.
        crop_min_scale: random resized crop: smallest area kept, a fraction of the image.
        rotation: random rotation, at most this many degrees either way (0 = none).
        rotation_prob: probability of a rotation.
        hflip: probability of a horizontal flip; null = 0 for grey images (digits are not
            mirror-symmetric), 0.5 for colour.
        color_jitter: probability of colour jitter (strength 0.5) and 0.2 of greyscale; null = 0
            for grey images (no hue or saturation to jitter), 0.8 for colour.
        threads: CPU threads of torch while training the encoder (null = ``trainer.threads``).
        num_workers: DataLoader processes making the augmented views (0 = in this process).
        cache_dir: encoders are cached in ``<cache_dir>/simclr-<fingerprint>/``, shared by every
            job on the same data and settings.
    """

    method: str = "simclr"
    encoder: str = "auto"
    encoder_kwargs: dict[str, Any] = _f({})
    dim: Optional[int] = _f(None, ge=1)
    epochs: int = _f(10, ge=1)
    batch_size: int = _f(256, ge=2)
    temperature: float = _f(0.5, ge=0.0, low_open=True)
    proj_hidden: Optional[int] = _f(None, ge=1)
    proj_dim: int = _f(64, ge=1)
    lr: float = _f(1e-3, ge=0.0, low_open=True)
    weight_decay: float = _f(1e-6, ge=0.0)
    seed: int = _f(0, ge=0)
    crop_min_scale: float = _f(0.5, ge=0.0, le=1.0, low_open=True)
    rotation: float = _f(15.0, ge=0.0, le=180.0)
    rotation_prob: float = _f(0.5, ge=0.0, le=1.0)
    hflip: Optional[float] = _f(None, ge=0.0, le=1.0)
    color_jitter: Optional[float] = _f(None, ge=0.0, le=1.0)
    threads: Optional[int] = _f(None, ge=1)
    num_workers: int = _f(0, ge=0)
    cache_dir: str = "${paths.output_root}/cache/ssl"


SCHEMAS = {"loop": LoopConfig, "trainer": TrainerConfig, "mlflow": MlflowConfig, "paths": PathsConfig}
#: every group whose ranges :func:`check_ranges` checks
CHECKED = {**SCHEMAS, "model": ModelRanges, "ssl": SSLConfig}
#: groups a config may leave out (``ssl: null``): their ranges are checked only when present
OPTIONAL = ("ssl",)


def register() -> None:
    """Store each schema as its group's ``default`` option in Hydra's ConfigStore (the
    ``trainer`` schema also as ``trainer/schema``, which ``trainer/cpu.yaml`` extends; the ``ssl``
    schema as ``ssl/schema``, which ``ssl/simclr.yaml`` extends)."""
    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group=group, name="default" if group != "trainer" else "schema", node=schema)
    cs.store(group="ssl", name="schema", node=SSLConfig)  # conf/ssl/simclr.yaml extends it


def _allowed(kind: str, ge, le, low_open: bool, nullable: bool, cfg: DictConfig, group: str) -> str:
    if isinstance(ge, str):
        text = f"{kind} >= {group}.{ge} ({OmegaConf.select(cfg, f'{group}.{ge}')})"
    elif ge is not None and le is not None:
        text = f"{kind} in {'(' if low_open else '['}{ge}, {le}]"
    else:
        text = f"{kind} {'>' if low_open else '>='} {ge}"
    return text + (" or null" if nullable and not isinstance(ge, str) else "")


def check_ranges(cfg: DictConfig) -> None:
    """Check every ranged field of :data:`SCHEMAS` in ``cfg``.

    Raises:
        ConfigError: e.g. ``loop.query_size=0 is invalid: must be an integer >= 1``.
    """
    from alframe.errors import ConfigError

    for group, schema in CHECKED.items():
        if group in OPTIONAL and OmegaConf.select(cfg, group, default=None) is None:
            continue
        for f in fields(schema):
            ge, le, low_open = (f.metadata.get(k) for k in ("ge", "le", "low_open"))
            if ge is None and le is None:
                continue
            key = f"{group}.{f.name}"
            value = OmegaConf.select(cfg, key, default=None)
            is_int = "int" in str(f.type)
            kind = "an integer" if is_int else "a number"
            allowed = _allowed(kind, ge, le, low_open, "Optional" in str(f.type), cfg, group)
            if value is None:
                if "Optional" in str(f.type):
                    continue
                raise ConfigError(f"{key} is missing: must be {allowed}")
            if isinstance(value, bool) or not isinstance(value, int if is_int else (int, float)):
                raise ConfigError(f"{key}={value!r} is invalid: must be {allowed}")
            low = OmegaConf.select(cfg, f"{group}.{ge}") if isinstance(ge, str) else ge
            if low is not None and (value <= low if low_open else value < low) or le is not None and value > le:
                raise ConfigError(f"{key}={value} is invalid: must be {allowed}")
