"""A budget switch: one strategy for the low-budget rounds, another once the labelled set is
large enough (Hacohen, Dekel & Weinshall 2022, "Active Learning on a Budget: Opposite
Strategies Suit High and Low Budgets", ICML; Yehuda et al. 2022, "Active Learning Through a
Covering Lens", NeurIPS: typicality or coverage while labels are few, uncertainty after)."""

from __future__ import annotations

import dataclasses

import numpy as np

from alframe.scoring.outputs import KNOWN_REQUIREMENTS, ModelOutputs
from alframe.strategies.base import QueryStrategy, check_k


class BudgetSwitch(QueryStrategy):
    """Query with ``first`` while fewer than ``switch_at`` samples are labelled, with ``then``
    from ``switch_at`` labels on: each query is exactly the chosen strategy's query (same
    outputs, ``k`` and ``rng``), given only the outputs that strategy declares.

    The labelled-set size is ``outputs.n_labelled`` (filled by the loop), else the number of
    rows of ``outputs.labelled_embeddings`` when those were scored. ``requires`` is the union of
    both strategies' (the loop scores the pool before the switch knows which side it is on, so
    every round pays for both); ``mc_samples`` is that of the MC-dropout strategy among them
    (both must agree when both sample), and setting ``consistent_dropout`` sets it on each
    MC-dropout strategy (the loop's ``loop.consistent_dropout``); it reads true when either asks
    for consistent masks. ``last_info`` is the active strategy's ``last_info`` (if any) plus
    ``switch_phase``: 0 for ``first``, 1 for ``then``.

    Args:
        first: the low-budget strategy (e.g. ProbCover, TypiClust); a Hydra ``_target_`` node in
            the config, instantiated recursively.
        then: the strategy from ``switch_at`` labels on (e.g. Margin, BALD).
        switch_at: labelled-set size at which ``then`` takes over (>= 0; 0: always ``then``).
        name: display name.

    Raises:
        TypeError: ``first`` or ``then`` is not a QueryStrategy.
        ValueError: ``switch_at`` < 0, or both strategies sample MC dropout with different T;
            in :meth:`query`, ``k < 1`` or a labelled-set size that is not known.
    """

    def __init__(self, first: QueryStrategy, then: QueryStrategy, switch_at: int, name: str | None = None):
        super().__init__(name)
        for key, s in (("first", first), ("then", then)):
            if not isinstance(s, QueryStrategy):
                raise TypeError(f"strategy.{key} must be a query strategy (a node with _target_), got {s!r}")
        if isinstance(switch_at, bool) or int(switch_at) != switch_at or int(switch_at) < 0:
            raise ValueError(f"switch_at (labelled-set size at which `then` takes over) must be an integer >= 0, "
                             f"got {switch_at!r}")
        t = {int(getattr(s, "mc_samples", 0) or 0) for s in (first, then) if "mc_probs" in s.requires}
        if len(t) > 1:
            raise ValueError(f"strategy.first and strategy.then both sample MC dropout, with different mc_samples "
                             f"{sorted(t)}: the pool is scored once, so set the same T")
        self.first, self.then, self.switch_at = first, then, int(switch_at)
        self.requires = frozenset(first.requires | then.requires)
        self.mc_samples = t.pop() if t else 0
        self.last_info: dict[str, float] = {}

    @property
    def cold_start(self) -> bool:
        """The strategy that chooses at 0 labels can choose without a trained model."""
        return (self.first if self.switch_at > 0 else self.then).cold_start

    @property
    def consistent_dropout(self) -> bool:
        return any(s.consistent_dropout for s in (self.first, self.then) if "mc_probs" in s.requires)

    @consistent_dropout.setter
    def consistent_dropout(self, value: bool) -> None:
        for s in (self.first, self.then):
            if "mc_probs" in s.requires:
                s.consistent_dropout = value

    def n_labelled(self, outputs: ModelOutputs) -> int:
        """The labelled-set size this query is made at.

        Raises:
            ValueError: neither ``outputs.n_labelled`` nor ``labelled_embeddings`` is set.
        """
        if outputs.n_labelled is not None:
            return int(outputs.n_labelled)
        if outputs.labelled_embeddings is not None:
            return int(outputs.labelled_embeddings.shape[0])
        raise ValueError(f"strategy {self.name!r} needs the labelled-set size: ModelOutputs.n_labelled is not set "
                         "(the loop fills it) and no labelled_embeddings were scored")

    def active(self, n_labelled: int) -> QueryStrategy:
        """The strategy that queries at ``n_labelled`` labels."""
        return self.first if n_labelled < self.switch_at else self.then

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        self.last_info = {}
        strategy = self.active(self.n_labelled(outputs))
        # only what the chosen strategy declares, as the loop would give it alone
        own = dataclasses.replace(outputs, **{f: None for f in KNOWN_REQUIREMENTS - strategy.requires})
        chosen = strategy.query(own, k, rng)
        self.last_info = {**getattr(strategy, "last_info", {}), "switch_phase": float(strategy is self.then)}
        return chosen

    def __repr__(self) -> str:
        return f"BudgetSwitch(name={self.name!r}, first={self.first!r}, then={self.then!r}, switch_at={self.switch_at})"
