"""Lets Nordic's tools (nrfcredstore, nrfcloud-utils) open certrot's modem emulator, a pseudo-terminal: they only
accept a port that pyserial lists, and pyserial lists /dev/ttyACM* and the like, never /dev/pts/N. With
NRF91_EMU_PTY set, the list is that one port. Nothing else of the tools is changed."""
import os

_pty = os.environ.get("NRF91_EMU_PTY")
if _pty:
    import serial.tools.list_ports as _ports
    from serial.tools.list_ports_common import ListPortInfo as _PortInfo

    _real = os.path.realpath(_pty)
    _ports.comports = lambda include_links=False: [_PortInfo(_real)]
