"""Stands in for Nordic's J-Link package (a 47 MB wheel), which nrfcredstore imports at the top but uses only for
J-Link and RTT connections, never on a serial port."""
from . import LowLevel  # noqa: F401
