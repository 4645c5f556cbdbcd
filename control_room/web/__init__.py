"""The web dashboard, served by the control room itself (docs/dashboard.md).

``control-room up`` starts it on ``[control_room] web_port`` (default 9030) and prints its URL.
Everything the page uses ships in ``static/``: it needs no internet at run time.
"""

from control_room.web.service import Dashboard, start_dashboard

__all__ = ["Dashboard", "start_dashboard"]
