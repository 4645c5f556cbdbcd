"""Driving a Bpod by hand while it runs or idles: outputs (OVERRIDE), soft codes and emulated
input edges. A base class of :class:`~services.bpod.core.BpodService`; every method takes the
service's device lock, like the rest of the core, so none can close the port under another.
"""

from __future__ import annotations

from services.bpod.driver import BpodError
from services.bpod.hardware import PHYSICAL_OUTPUTS, output_limit
from shared_utils.checks import check_number, short, unknown_message
from shared_utils.errors import CommandError


class ManualControls:
    """OVERRIDE, SOFT_CODE and EMULATE_INPUT (see the module notes)."""

    def _output_index(self, channel: str) -> int:
        drv = self._require_connected()
        names = drv.hw.output_channel_names()
        valid = [n for n, k in zip(names, drv.hw.outputs, strict=True) if k in PHYSICAL_OUTPUTS]
        if channel not in valid:
            raise CommandError(unknown_message("output channel", channel, valid))
        return names.index(channel)

    def override(self, channel: str, value: int) -> dict:
        """Drive an output by name (Valve1, PWM1, BNC1...); 0 releases it.

        A nonzero value latches the output against state outputs until it is set back to 0.
        """
        with self.lock:
            ch = self._output_index(channel)
            kind = self.driver.hw.outputs[ch]
            check_number(channel, value, 0, output_limit(kind), integer=True)
            try:
                self.driver.override(ch, value)
            except BpodError as exc:
                raise CommandError(str(exc)) from None
        return {"channel": channel, "value": value}

    def soft_code(self, code: int) -> dict:
        """Send soft code n to the running trial (event SoftCode<n>).

        ``code`` is 1-based, like MATLAB's SendBpodSoftCode.
        """
        with self.lock:
            drv = self._require_connected()
            n = drv.hw.alloc[drv.hw.inputs.index("X")] if "X" in drv.hw.inputs else 0
            if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= n:
                raise CommandError(
                    f"soft code must be 1..{n} (event SoftCode<code>), got {short(code)}"
                )
            if not self.running:
                raise CommandError("soft codes only reach a running trial; RUN first")
            try:
                drv.soft_code(code)
            except BpodError as exc:
                raise CommandError(str(exc)) from None
        return {"code": code, "event": f"SoftCode{code}"}

    def emulate_input(self, event: str) -> dict:
        """Simulate an input edge (Port1In, Port1Out, BNC1High...) during a trial.

        Uses the device's virtual input (``V``), which acts only while a trial runs.
        """
        with self.lock:
            drv = self._require_connected()
            edges = drv.hw.input_edges()
            if event not in edges:
                raise CommandError(unknown_message("input event", event, list(edges)))
            if not self.running:
                raise CommandError(
                    "virtual inputs only act during a trial (the device ignores them when idle); "
                    "RUN first"
                )
            ch, logical = edges[event]
            raw = logical if drv.hw.logic_high(ch) == 1 else 1 - logical
            try:
                drv.virtual_input(ch, raw)
            except BpodError as exc:
                raise CommandError(str(exc)) from None
        return {"event": event, "channel": drv.hw.input_channel_names()[ch], "raw_level": raw}
