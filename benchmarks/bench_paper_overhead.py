"""Framework overhead on the paper workload: ``experiment=gal2017_mnist_cpu`` (Gal, Islam &
Ghahramani 2017) through alframe against the same loop in plain PyTorch.

Both loops do the same work on the same data with the same seeds, at one thread: each round a
fresh ``GalCNN`` (conv32-4x4, conv32-4x4, max-pool, dropout, dense 128, dropout, dense 10) is
initialised from ``round_seed(seed, r)`` and trained with the ``gal2017`` protocol (50 epochs,
batch 128, Adam lr 1e-3, Keras' ``l2(3.5 / N)`` on the dense layer's weights as torch weight decay
``2 * 3.5 / N`` in its own parameter group, N = labelled-set size), in the same data order; it is
evaluated on the 2,000-image test subset and the 100-image validation split; a seeded random subset
of 1,000 pool images is scored with MC dropout (T = 20, trunk once and the head sampled, as
alframe scores) and the 10 images with the highest BALD score are labelled. alframe adds Hydra's
config checks, Lightning's ``Trainer``, MLflow logging (a store that already exists), state saving
(fsynced ``pool_state.npz``, ``queries.csv``, the round's model) and the end-of-run plots. The
labelling-job extras (stop-set and machine-label passes, the MLflow model) are switched off
(:data:`SAME_WORK`), since the plain loop does not do that work, and so is the stop at 95% test
accuracy, so both loops run every round. The plain loop checks that its own BALD picks equal the
batch alframe queried in each round; were they to differ (floating point), it would label
alframe's batch (after doing its own scoring work), so the work stays the same, and the report
says in how many rounds that happened. Goal: alframe <= 1.05x the plain loop.

Printed: wall and process CPU seconds of each loop and their ratios (best of ``--reps`` interleaved
runs), and, since ~21 s of identical arithmetic scatters by 5-10% on a shared machine, the work
both loops share (training steps, evaluation, scoring; metered in each) apart from the rest of each
run, and the ratio with the shared work taken equal: alframe's overhead without that noise.

Data: the 10,000-digit MNIST subset ``mnist10k`` (8,000 train / 2,000 test; ``alframe-data
mnist-subset``), from ``--mnist10k DIR``, ``$ALFRAME_MNIST10K`` or ``../shared/data/mnist10k``
next to the repository; skipped with a message without it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from alframe.data.base import LabelledView, make_loader
from alframe.data.vision import mnist
from alframe.loop import experiment, selection
from alframe.loop.experiment import run_experiment
from alframe.loop.selection import initial_indices
from alframe.models.cnn import GalCNN
from alframe.models.lightning import ALClassifier
from alframe.rundir.state import PoolState
from alframe.scoring.evaluate import evaluate
from alframe.scoring.pool import compute_outputs
from alframe.tracking.store import prepare_store
from alframe.training.seeds import SCORE, round_rng, round_seed

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
ENV = "ALFRAME_MNIST10K"
GOAL = 1.05
#: labelling-job extras off (work the plain loop does not do) and no early stop at 95%
SAME_WORK = ["loop.stop_set_size=0", "loop.machine_label_evidence=false", "mlflow.log_model=false",
             "loop.target_accuracy=null"]


def data_root(arg: str | None) -> Path | None:
    """The mnist10k folder (holds ``MNIST/raw``): ``arg``, ``$ALFRAME_MNIST10K`` or
    ``<repository>/../shared/data/mnist10k``; None when it has no MNIST files."""
    for cand in (arg, os.environ.get(ENV), ROOT.parent / "shared" / "data" / "mnist10k"):
        if cand and (Path(cand) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand)
    return None


def paper_cfg(out: Path, root: Path, rounds: int, overrides: list[str] = ()):
    """``experiment=gal2017_mnist_cpu`` with ``rounds`` query rounds, one thread, writing under ``out``."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=[
            "experiment=gal2017_mnist_cpu", f"dataset.root={root}", "dataset.download=false",
            f"loop.rounds={rounds}", "trainer.threads=1", f"paths.output_root={out}",
            f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db", *SAME_WORK, *overrides])


def seed_all(seed: int) -> None:
    """Python, NumPy and torch generators from ``seed`` (what ``pl.seed_everything`` seeds)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bald(mc_probs: torch.Tensor) -> np.ndarray:
    """Mutual information ``H[mean_t p] - mean_t H[p]`` of ``[M, T, C]`` probabilities, float64,
    0 log 0 = 0, clipped at 0."""
    p = mc_probs.double()
    m = p.mean(dim=1)
    h_mean = -torch.special.xlogy(m, m).sum(-1)
    mean_h = -torch.special.xlogy(p, p).sum(-1).mean(dim=1)
    return (h_mean - mean_h).clamp_min(0.0).numpy()


def plain_loop(cfg, follow: dict[int, np.ndarray] | None = None) -> dict:
    """``gal2017_mnist_cpu`` in plain PyTorch: no Lightning, MLflow or Hydra in the loop, no files.

    Args:
        follow: ``{round: indices alframe queried}``; in a round where this loop's own BALD picks
            differ, it labels these instead (after its own scoring), so both do the same work.

    Returns:
        ``{"accs": final-round test accuracy per round, "picks": {round: own picks},
        "labelled": {round: indices labelled}, "followed": rounds where alframe's batch was used}``.
    """
    m, t = cfg.model, cfg.trainer
    d = cfg.dataset
    data = mnist(root=d.root, download=False, val_size=int(d.val_size), split_seed=int(d.split_seed),
                 normalize=bool(d.normalize), test_size=int(d.test_size))
    state = PoolState.create(data.n_train, holdout=data.val_idx)
    first = initial_indices(cfg, data, state)
    state.label(first, data.targets[first], 0)
    val = data.validation_set()
    accs, picks, labelled, followed = [], {}, {}, []
    meter = Meter()
    for r in range(int(cfg.loop.rounds) + 1):
        seed = round_seed(cfg.seed, r)
        seed_all(seed)
        net = GalCNN(data.num_classes, data.input_shape, channels=m.net.channels, kernel=m.net.kernel,
                     hidden=m.net.hidden, dropout_in=m.net.dropout_in, dropout=m.net.dropout)
        idx = state.labelled_idx
        # Keras' l2(c / N) on the dense layer's weights: gradient 2 c / N * w, torch weight decay
        decayed = [p for name, p in net.named_parameters() if name in t.weight_decay_params]
        rest = [p for name, p in net.named_parameters() if name not in t.weight_decay_params]
        opt = torch.optim.Adam([{"params": decayed, "weight_decay": 2.0 * float(t.weight_decay_per_label) / len(idx)},
                                {"params": rest}], lr=float(m.optimizer.lr), weight_decay=float(m.optimizer.weight_decay))
        loader = make_loader(LabelledView(data.train, idx, state.labels[idx]), batch_size=int(m.batch_size),
                             shuffle=True, seed=seed)
        net.train()
        for _ in range(int(t.max_epochs)):
            for x, y in loader:
                with meter.part("steps"):
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(net(x), y).backward()
                    opt.step()
        with meter.part("evaluate"):
            accs.append(evaluate(net, data.test, batch_size=int(cfg.loop.eval_batch_size))["accuracy"])
            evaluate(net, val, batch_size=int(cfg.loop.eval_batch_size))
        if r == int(cfg.loop.rounds):
            break
        q = r + 1  # the query round: its generator draws the pool subset, its SCORE seed the masks
        rng, pool = round_rng(cfg.seed, q), state.pool_idx
        candidates = np.sort(rng.choice(pool, size=int(cfg.loop.pool_subset), replace=False))
        torch.manual_seed(round_seed(cfg.seed, q, SCORE))
        with meter.part("score"):
            out = compute_outputs(net, data.train, candidates, {"mc_probs"},
                                  mc_samples=int(cfg.strategy.mc_samples), batch_size=int(cfg.loop.eval_batch_size))
        scores = bald(out.mc_probs)
        chosen = out.idx[np.lexsort((out.idx, -scores))[: int(cfg.loop.query_size)]]
        picks[q] = chosen
        if follow is not None and q in follow and set(follow[q].tolist()) != set(chosen.tolist()):
            chosen = follow[q]
            followed.append(q)
        labelled[q] = chosen
        state.label(chosen, data.targets[chosen], q)
    return {"accs": accs, "picks": picks, "labelled": labelled, "followed": followed, "meter": meter}


#: the work both loops share, metered in each: the training steps (zero_grad, forward, backward,
#: optimiser step; in alframe ``ALClassifier.training_step``, Lightning's optimiser wrapper
#: included), test and validation evaluation, MC-dropout scoring of the pool subset
PARTS = ("steps", "evaluate", "score")


class Meter:
    """Process CPU and wall seconds summed per named part of a run (``seconds[name] = [cpu, wall]``)."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def part(self, name: str):
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            acc = self.seconds.setdefault(name, [0.0, 0.0])
            acc[0] += time.process_time() - c0
            acc[1] += time.perf_counter() - t0

    def get(self, name: str, i: int) -> float:
        return self.seconds.get(name, [0.0, 0.0])[i]


@contextlib.contextmanager
def metered():
    """Within the block, alframe's shared work (:data:`PARTS`) and its per-round ``fit`` (Trainer and
    module built, Lightning's ``fit``) are metered into the yielded :class:`Meter`. The wrappers cost
    microseconds per call (a few hundred calls per run)."""
    meter = Meter()
    patched = [(ALClassifier, "training_step", "steps"), (experiment, "evaluate_many", "evaluate"),
               (selection, "compute_outputs", "score"), (experiment, "fit", "fit")]
    originals = [getattr(obj, name) for obj, name, _ in patched]

    def metering(f, name):
        @functools.wraps(f)
        def g(*a, **k):
            with meter.part(name):
                return f(*a, **k)
        return g

    for (obj, attr, name), f in zip(patched, originals, strict=True):
        setattr(obj, attr, metering(f, name))
    try:
        yield meter
    finally:
        for (obj, attr, _), f in zip(patched, originals, strict=True):
            setattr(obj, attr, f)


def alframe_queries(run_dir: Path) -> dict[int, np.ndarray]:
    """``{round: indices}`` of the query rounds in ``run_dir/queries.csv``."""
    by_round: dict[int, list[int]] = {}
    with (run_dir / "queries.csv").open() as f:
        for row in csv.DictReader(f):
            if int(row["round"]) > 0:
                by_round.setdefault(int(row["round"]), []).append(int(row["index"]))
    return {r: np.asarray(sorted(v), dtype=np.int64) for r, v in by_round.items()}


def _timed(f, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    res = f(*args)
    return res, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_paper_overhead")
    p.add_argument("--mnist10k", help=f"the mnist10k folder (default ${ENV}, then ../shared/data/mnist10k)")
    p.add_argument("--rounds", type=int, default=6, help="query rounds (default 6: 20 -> 80 labels)")
    p.add_argument("--reps", type=int, default=3, help="timed runs of each loop, interleaved; best of them")
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)  # `python -m benchmarks paper`
    root = data_root(args.mnist10k)
    if root is None:
        print(f"skipped: no mnist10k (set {ENV}=<dir> or pass --mnist10k <dir>; build it with "
              "`alframe-data mnist-subset --from mnist-1.1.0.tgz --out <dir>`)")
        return
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    runs: dict[str, list[dict]] = {"plain": [], "alframe": []}  # per rep: wall, cpu, parts
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up of both (lazy imports, MLflow client, allocator), one short round each
        warm = paper_cfg(tmp / "warm", root, 1, ["trainer.max_epochs=1", "loop.pool_subset=100"])
        prepare_store(f"sqlite:///{tmp}/warm/mlflow.db", warm.mlflow.experiment_name)
        run_experiment(warm, tmp / "warm" / "job")
        plain_loop(warm)
        follow, plain, res = None, None, None
        for rep in range(args.reps):
            out = tmp / f"rep{rep}"
            cfg = paper_cfg(out, root, args.rounds)
            # steady state: the store exists, as for every run after a user's first one
            prepare_store(f"sqlite:///{out}/mlflow.db", cfg.mlflow.experiment_name)
            order = ("alframe", "plain") if rep % 2 == 0 else ("plain", "alframe")
            for which in order:
                if which == "alframe":
                    with metered() as meter:
                        res, wall, cpu = _timed(run_experiment, cfg, out / "job")
                    follow = alframe_queries(res.run_dir)
                else:
                    plain, wall, cpu = _timed(plain_loop, cfg, follow)
                    meter = plain["meter"]
                runs[which].append({"wall": wall, "cpu": cpu, "meter": meter})
                print(f"  rep {rep} {which:7s}: {wall:7.2f} s wall, {cpu:7.2f} s CPU", flush=True)
    load1 = os.getloadavg()
    same = sorted(follow) == sorted(plain["labelled"]) and \
        all(np.array_equal(np.sort(plain["labelled"][r]), follow[r]) for r in follow)
    own = sum(np.array_equal(np.sort(plain["picks"][r]), follow[r]) for r in follow)
    same_acc = [h["test_accuracy"] for h in res.history] == plain["accs"]
    wall = {k: min(r["wall"] for r in v) for k, v in runs.items()}
    cpu = {k: min(r["cpu"] for r in v) for k, v in runs.items()}
    best = {"cpu": cpu, "wall": wall}
    # the shared work (PARTS) and the rest of each run beyond it, per rep; best (least) of the reps
    shared, rest = {}, {}
    for k, v in runs.items():
        for i, what in enumerate(("cpu", "wall")):
            shared[k, what] = min(sum(r["meter"].get(x, i) for x in PARTS) for r in v)
            rest[k, what] = min(r[what] - sum(r["meter"].get(x, i) for x in PARTS) for r in v)
    around = min(r["meter"].get("fit", 0) - r["meter"].get("steps", 0) for r in runs["alframe"])
    est = {w: (best[w]["plain"] + rest["alframe", w] - rest["plain", w]) / best[w]["plain"] for w in ("cpu", "wall")}
    n_final = int(cfg.loop.initial_size) + args.rounds * int(cfg.loop.query_size)
    fits = args.rounds + 1
    print(f"paper workload (gal2017_mnist_cpu: GalCNN, mnist10k, 50 epochs/round, batch 128, BALD T=20 on 1,000 "
          f"pool images): {args.rounds} rounds (20 -> {n_final} labels), {torch.get_num_threads()} thread, best of "
          f"{args.reps}; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    print(f"  plain PyTorch loop : {wall['plain']:7.2f} s wall, {cpu['plain']:7.2f} s CPU  "
          f"(final test accuracy {plain['accs'][-1]:.4f})")
    print(f"  alframe            : {wall['alframe']:7.2f} s wall, {cpu['alframe']:7.2f} s CPU  "
          f"(final test accuracy {res.final_accuracy:.4f})")
    print(f"  ratio alframe/plain: wall {wall['alframe'] / wall['plain']:.3f}x, CPU {cpu['alframe'] / cpu['plain']:.3f}x "
          f"(goal <= {GOAL:.2f}x)")
    print(f"  labelled sets identical round by round: {same}; the plain loop's own BALD picks equal alframe's "
          f"in {own}/{len(follow)} rounds" + (f" (it labelled alframe's batch in rounds {plain['followed']})"
                                               if plain["followed"] else "")
          + f"; test accuracy equal in every round: {same_acc}")
    print(f"  the shared work (training steps, evaluation, scoring), CPU / wall s: plain {shared['plain', 'cpu']:.2f} / "
          f"{shared['plain', 'wall']:.2f}, alframe {shared['alframe', 'cpu']:.2f} / {shared['alframe', 'wall']:.2f}")
    print(f"  the rest of the run, CPU / wall s: plain {rest['plain', 'cpu']:.2f} / {rest['plain', 'wall']:.2f}, alframe "
          f"{rest['alframe', 'cpu']:.2f} / {rest['alframe', 'wall']:.2f}, of which Lightning's fit beyond the steps "
          f"{around:.2f} CPU s ({around / fits * 1e3:.0f} ms per fit, Trainer and module built)")
    print(f"  ratio with the shared work taken equal (plain + alframe's rest - plain's rest): CPU {est['cpu']:.3f}x, "
          f"wall {est['wall']:.3f}x")

if __name__ == "__main__":
    main()
