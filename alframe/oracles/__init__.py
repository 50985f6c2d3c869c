"""Oracles: where labels come from (stored labels, noisy annotators, people, other tools).

``oracle=stored`` (simulation), ``noisy`` (simulated annotator errors), ``terminal`` and
``web`` (a person labels; answers saved at once), ``files`` (hand-off to Label Studio or a
spreadsheet; imported on resume), ``label_studio`` (a running Label Studio, round after round).
The web oracle lives in :mod:`alframe.oracles.web`, the live Label Studio one in
:mod:`alframe.oracles.label_studio_live` (it needs the ``label-studio`` extra).
"""

from alframe.errors import LabelImportError
from alframe.oracles.base import LabelRequest, LabelResult, Oracle, parse_label
from alframe.oracles.files import FilesOracle
from alframe.oracles.noisy import NoisyOracle
from alframe.oracles.stored import StoredOracle
from alframe.oracles.terminal import TerminalOracle

__all__ = ["Oracle", "LabelRequest", "LabelResult", "parse_label", "StoredOracle", "NoisyOracle",
           "TerminalOracle", "FilesOracle", "LabelImportError"]
