"""Dareplane's StreamWatcher names (``unfold_buffer``, ``buffer``, ``curr_i``, ...), so modules
written for dareplane-utils run on our StreamWatcher after changing one import. A base class of
:class:`~shared_utils.streams.watcher.StreamWatcher`; prefer ``window`` and ``pop_new`` in new code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class DareplaneNames:
    """The Dareplane attribute names, each mapped onto the ring buffer."""

    def _rb(self) -> Any:  # provided by StreamWatcher
        raise NotImplementedError

    def unfold_buffer(self) -> np.ndarray:
        """All buffered samples, oldest first (a copy; Dareplane name, without zero padding)."""
        return self._rb().unfold()[0]

    def unfold_buffer_t(self) -> np.ndarray:
        """Timestamps matching :meth:`unfold_buffer`."""
        return self._rb().unfold()[1]

    @property
    def buffer(self) -> np.ndarray:
        """The raw ring array (Dareplane attribute); prefer :meth:`window`."""
        return self._rb().data

    @property
    def buffer_t(self) -> np.ndarray:
        """The raw ring timestamps (Dareplane attribute)."""
        return self._rb().ts

    @property
    def curr_i(self) -> int:
        """Live write index into :attr:`buffer` (Dareplane's was a stale copy)."""
        return self._rb().pos

    @property
    def n_buffer(self) -> int:
        return self._rb().keep
