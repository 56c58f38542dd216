"""Named crash points for crash-safety tests: a real SIGKILL of this process at a precise step.

`STEERTUI_TEST_CRASH_AT=name` (read when the point is reached) kills the process there. Unset in
normal use; costs one environment lookup per point.
"""

from __future__ import annotations

import os
import signal

ENV = "STEERTUI_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
