"""The pure policy: `decide(snapshot, config) -> Plan`.

No I/O, no clock, no randomness, no logging: the same snapshot and config always
yield the same plan. The loop, the health report and the simulator all call these
functions; nothing else re-implements a rule.
"""

from .plan import decide

__all__ = ["decide"]
