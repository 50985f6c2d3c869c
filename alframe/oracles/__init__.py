"""Oracles: where labels come from (stored labels, noisy annotators, people, other tools)."""

from alframe.oracles.base import LabelRequest, LabelResult, Oracle
from alframe.oracles.stored import StoredOracle

__all__ = ["Oracle", "LabelRequest", "LabelResult", "StoredOracle"]
