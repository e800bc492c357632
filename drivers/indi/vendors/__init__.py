"""One small adapter per INDI camera driver family, chosen by ``DRIVER_INFO.DRIVER_EXEC``.

Device names can be renamed by the user (nicknames), so the driver executable decides; the device-name prefix is
only a hint when the executable is unknown (e.g. a simulator impersonating a vendor). Anything else gets the
:class:`GenericAdapter` (KStars discovery rule plus the ``INDI::CCD`` base vocabulary). ``docs/drivers.md`` tabulates
what each adapter sets, reads and records.
"""

from __future__ import annotations

from drivers.indi.vendors.asi import AsiAdapter
from drivers.indi.vendors.atik import AtikAdapter
from drivers.indi.vendors.base import Control, VendorAdapter, Vocabulary
from drivers.indi.vendors.fli import FliAdapter
from drivers.indi.vendors.generic import GenericAdapter
from drivers.indi.vendors.mi import MiAdapter
from drivers.indi.vendors.playerone import PlayerOneAdapter
from drivers.indi.vendors.qhy import QhyAdapter
from drivers.indi.vendors.svbony import SvbonyAdapter
from drivers.indi.vendors.toupcam import ToupcamAdapter

ADAPTERS: tuple[type[VendorAdapter], ...] = (QhyAdapter, AsiAdapter, PlayerOneAdapter, ToupcamAdapter, SvbonyAdapter,
                                             AtikAdapter, MiAdapter, FliAdapter, GenericAdapter)

__all__ = ["ADAPTERS", "Control", "VendorAdapter", "Vocabulary", "adapter_for"]


def adapter_for(driver_exec: str | None, device: str | None = None) -> VendorAdapter:
    """The adapter for ``driver_exec`` (e.g. ``indi_asi_ccd``); by device-name prefix only when the exec is unknown."""
    exec_name = (driver_exec or "").strip().rsplit("/", 1)[-1]
    for cls in ADAPTERS:
        if exec_name in cls.execs:
            return cls()
    for cls in ADAPTERS:
        if device and any(device.startswith(prefix) for prefix in cls.device_prefixes):
            return cls()
    return GenericAdapter()
