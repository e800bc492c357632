"""IndiCamera over each family's vocabulary: range checks before sending, presets, cooler quirks, heaters, readiness.

A small in-memory stand-in for :class:`drivers.indi.client.IndiClient` holds the snapshots of
``tests/unit/test_vendor_adapters.py`` and records what the camera sends, in order. The real client and server are
exercised by tests/integration/test_camera_stock.py and test_camera_sim.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from astropy.io import fits

from drivers.camera import CameraDisconnected, CameraTimeout, CaptureSettings, SettingNotApplied, SettingUnsupported
from drivers.indi.camera import IndiCamera
from drivers.indi.client import PropertySnapshot
from drivers.indi.vendors import adapter_for
from tests.unit.test_vendor_adapters import ASI, ATIK, DEV, FLI, MI, QHY, STOCK, TOUP


class FakeClient:
    """Snapshots in a dict; a send updates the snapshot (unless write-only) and is recorded."""

    server_up = True

    def __init__(self, props: dict[str, PropertySnapshot]) -> None:
        self.props = dict(props)
        self.sent: list[tuple[str, Any]] = []
        self._version = 100

    def get(self, device: str, name: str) -> PropertySnapshot | None:
        return self.props.get(name)

    def require(self, device: str, name: str) -> PropertySnapshot:
        return self.props[name]

    def properties(self, device: str) -> dict[str, PropertySnapshot]:
        return dict(self.props)

    def epoch(self, device: str) -> int:
        return 0

    def messages(self, device: str | None = None, since: Any = None) -> list[str]:
        return []

    def _update(self, name: str, values: dict[str, Any]) -> int:
        before = self._version
        self._version += 1
        snap = self.props[name]
        # write-only vectors echo nothing; CCD_TEMPERATURE reports the sensor, not the set point just sent
        new_values = snap.values if snap.permission == "wo" or name == "CCD_TEMPERATURE" else {**snap.values, **values}
        self.props[name] = replace(snap, values=new_values, version=self._version, state="Ok")
        return before

    def send_number(self, device: str, name: str, values: dict[str, float]) -> int:
        self.sent.append((name, dict(values)))
        return self._update(name, dict(values))

    def send_switch(self, device: str, name: str, on: list[str]) -> int:
        self.sent.append((name, list(on)))
        return self._update(name, {k: k in on for k in self.props[name].values})

    def wait_update(self, device: str, name: str, after: int, timeout_s: float, accept: Any = None, *,
                    epoch: int | None = None) -> PropertySnapshot:
        snap = self.props[name]
        if snap.version <= after:
            raise CameraTimeout(f"no update of {name}")
        return snap


def attach(props: dict[str, PropertySnapshot], driver_exec: str) -> tuple[IndiCamera, FakeClient]:
    """A camera as connect() leaves it, over the fake client."""
    client = FakeClient(props)
    cam = IndiCamera(detect_profile=False)
    cam.client, cam.device = client, DEV  # type: ignore[assignment]
    cam.adapter = adapter_for(driver_exec)
    cam.vocabulary = cam.adapter.discover(client.properties(DEV))
    cam._connect_called = True
    cam._ready.set()
    return cam, client


def test_out_of_range_values_are_refused_before_anything_is_sent() -> None:
    cam, client = attach(ASI, "indi_asi_ccd")
    with pytest.raises(SettingNotApplied, match=r"gain 601 is outside the driver's range 0\.\.600"):
        cam.apply_settings(CaptureSettings(gain=601, offset=10))
    with pytest.raises(SettingNotApplied, match=r"offset 101 .* range 0\.\.100"):
        cam.check_settings(CaptureSettings(gain=100, offset=101))
    with pytest.raises(SettingNotApplied, match=r"exposure 4000 s is outside the driver's range 0\.0001\.\.3600 s"):
        cam.check_settings(CaptureSettings(gain=100), exposure_s=4000)
    with pytest.raises(SettingNotApplied, match=r"set point -60 °C is outside the driver's range -50\.\.50 °C"):
        cam.check_settings(CaptureSettings(), exposure_s=10, set_point_c=-60)
    with pytest.raises(SettingUnsupported, match="CCD_AMP_GLOW"):
        cam.check_settings(CaptureSettings(amp_glow="off"))
    assert client.sent == []  # nothing reached the driver
    cam.check_settings(CaptureSettings(gain=600, offset=0, usb_traffic=40), exposure_s=3600, set_point_c=-50)


def test_read_only_gain_is_refused_and_recorded_instead() -> None:
    cam, client = attach(MI, "indi_mi_ccd")
    with pytest.raises(SettingUnsupported, match=r"CCD_GAIN\.GAIN is read-only"):
        cam.check_settings(CaptureSettings(gain=1))
    with pytest.raises(SettingUnsupported, match="has no CCD_OFFSET"):
        cam.check_settings(CaptureSettings(offset=1))
    assert cam.setting_value("gain") == 0.8 and client.sent == []


def test_settings_go_where_the_family_keeps_them() -> None:
    cam, client = attach(ASI, "indi_asi_ccd")
    applied = cam.apply_settings(CaptureSettings(gain=139, offset=21, usb_traffic=80))
    assert (applied.gain, applied.offset, applied.usb_traffic) == (139, 21, 80)
    assert client.sent == [("CCD_CONTROLS", {"Gain": 139}), ("CCD_CONTROLS", {"Offset": 21}),
                           ("CCD_CONTROLS", {"BandWidth": 80})]
    state = cam.state()
    assert (state.gain, state.offset) == (139, 21)

    cam, client = attach(TOUP, "indi_toupcam_ccd")
    applied = cam.apply_settings(CaptureSettings(gain=200, offset=16, conversion_gain=1))
    assert client.sent == [("CCD_CONTROLS", {"Gain": 200}), ("CCD_OFFSET", {"OFFSET": 16}),
                           ("TC_CONVERSION_GAIN", ["GAIN_HIGH"])]
    assert applied.conversion_gain == 1


def test_atik_selects_the_custom_preset_before_gain_and_offset() -> None:
    cam, client = attach(ATIK, "indi_atik_ccd")
    cam.apply_settings(CaptureSettings(offset=40))
    assert client.sent == [("CCD_CONTROL_PRESETS", ["PRESET_CUSTOM"]), ("CCD_CONTROLS", {"CONTROL_OFFSET": 40})]


def test_atik_cooler_switch_only_when_cooling_down() -> None:
    cam, client = attach(ATIK, "indi_atik_ccd")  # sensor at 20 °C
    cam.set_temperature(25.0)
    assert [name for name, _ in client.sent] == ["CCD_TEMPERATURE"]
    client.sent.clear()
    cam.set_temperature(-10.0)
    assert client.sent == [("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -10.0}), ("CCD_COOLER", ["COOLER_ON"])]


def test_write_only_cooler_is_sent_and_judged_by_its_power() -> None:
    cam, client = attach(ASI, "indi_asi_ccd")
    cam.set_temperature(-10.0)
    assert client.sent == [("CCD_COOLER", ["COOLER_ON"]), ("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -10.0})]
    assert cam.state().cooler_on is False  # the switch is unreadable: 0 % power says off
    client.props["CCD_COOLER_POWER"] = replace(client.props["CCD_COOLER_POWER"], values={"CCD_COOLER_VALUE": 42.0})
    assert cam.state().cooler_on is True and cam.cooler_power_pct() == 42.0


def test_fli_cools_and_warms_through_the_set_point_alone() -> None:
    cam, client = attach(FLI, "indi_fli_ccd")
    cam.set_temperature(-20.0)
    assert client.sent == [("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -20.0})]
    cam._switch_cooler(client, DEV, on=False)  # type: ignore[arg-type]
    assert len(client.sent) == 1


def test_toupcam_cooler_power_reads_its_own_element() -> None:
    props = dict(TOUP)
    props["CCD_COOLER_POWER"] = replace(props["CCD_COOLER_POWER"], values={"COOLER_POWER": 55.0})
    cam, _ = attach(props, "indi_toupcam_ccd")
    assert cam.cooler_power_pct() == 55.0


@pytest.mark.parametrize(("props", "driver_exec", "expected"), [
    (ASI, "indi_asi_ccd", [("CCD_CONTROLS", {"AntiDewHeater": 0})]),
    (TOUP, "indi_toupcam_ccd", [("TC_HEAT_CONTROL", ["INDI_DISABLED"])]),
    (MI, "indi_mi_ccd", [("CCD_WINDOW_HEATING", {"WINDOW_HEATING": 0})]),  # write-only: always sent
    (STOCK, "indi_simulator_ccd", []),
])
def test_heaters_are_switched_off_before_a_dark_series(props: dict, driver_exec: str, expected: list) -> None:
    cam, client = attach(props, driver_exec)
    cam._settle_heaters(client, DEV)  # type: ignore[arg-type]
    assert client.sent == expected


def test_a_heater_the_user_asks_for_is_kept() -> None:
    cam, client = attach(TOUP, "indi_toupcam_ccd")
    applied = cam.apply_settings(CaptureSettings(heater=1))
    assert applied.heater == 1 and client.sent == [("TC_HEAT_CONTROL", ["HEAT1"])]
    assert cam._applied.heater == 1  # expose() leaves heaters alone when the request set one


def test_frame_header_is_checked_against_the_request() -> None:
    cam, _ = attach(ASI, "indi_asi_ccd")
    cam.apply_settings(CaptureSettings(gain=139))
    cam._check_header(fits.Header({"GAIN": 139}), DEV)
    with pytest.raises(SettingNotApplied, match="the frame says GAIN=0 but gain 139 was requested"):
        cam._check_header(fits.Header({"GAIN": 0}), DEV)


def test_not_connected_until_connect_has_finished() -> None:
    cam = IndiCamera()
    assert not cam.state().connected
    with pytest.raises(CameraDisconnected, match="call connect"):
        _ = cam.capabilities
    with pytest.raises(CameraDisconnected, match="call connect"):
        cam.apply_settings(CaptureSettings())
    # half-way through a connect: client and device known, capabilities not yet published
    cam, _ = attach(ASI, "indi_asi_ccd")
    cam._ready.clear()
    assert not cam.state().connected and not cam.wait_ready(0.01)
    cam._ready.set()
    assert cam.state().connected and cam.wait_ready(0.01)


def test_ambient_is_judged_by_power_when_the_cooler_starts_on() -> None:
    # ToupTek/Moravian: the cooler switch says ON at connect; 0 % power still means the sensor sits at ambient
    props = dict(TOUP)
    props["CCD_COOLER"] = replace(props["CCD_COOLER"], values={"COOLER_ON": True, "COOLER_OFF": False})
    cam, client = attach(props, "indi_toupcam_ccd")
    cam.client = None  # during connect nothing is published yet: the estimate must use the client it is given
    assert cam._ambient_estimate(client, DEV) == 20.0  # type: ignore[arg-type]
    props["CCD_COOLER_POWER"] = replace(props["CCD_COOLER_POWER"], values={"COOLER_POWER": 60.0})
    cam, client = attach(props, "indi_toupcam_ccd")
    assert cam._ambient_estimate(client, DEV) is None  # type: ignore[arg-type]


def test_write_only_cooler_is_verified_by_its_effect() -> None:
    cam, client = attach(ASI, "indi_asi_ccd")  # sensor at 20 °C, 0 % power: the cooler never starts
    cam.set_temperature(-10.0)
    client.sent.clear()
    with pytest.raises(SettingNotApplied, match="the cooler did not start"):
        cam.wait_until_stable(-10.0, hold_s=0.01, timeout_s=5.0, unreachable_window_s=0.05)
    assert client.sent == [("CCD_COOLER", ["COOLER_ON"])]  # sent once more before giving up

    cam, client = attach(ASI, "indi_asi_ccd")  # power drawn: the switch worked, only the target is slow
    client.props["CCD_COOLER_POWER"] = replace(client.props["CCD_COOLER_POWER"], values={"CCD_COOLER_VALUE": 42.0})
    with pytest.raises(CameraTimeout, match=r"not stable.*held at 20\.00 °C and the set point sent again"):
        cam.wait_until_stable(-10.0, hold_s=0.01, timeout_s=0.3, unreachable_window_s=0.05)
    # no second COOLER_ON from the effect check; the sensor held 30 °C from the set point at 42 % is read as regulated
    # to another set point (drivers.cooling.HeldElsewhereDetector), so the set point goes out once more, and only once
    assert client.sent == [("CCD_COOLER", ["COOLER_ON"]), ("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -10.0})]


def test_read_mode_labels_come_from_a_read_mode_switch_only() -> None:
    """Moravian's ``CCD_READ_MODE`` switch names its modes (the light rule maps N.I.N.A.'s ``READOUTM`` through them);
    a number read mode (QHY's ``READ_MODE.MODE``) names none."""
    mi, client = attach(MI, "indi_mi_ccd")
    client.props["CCD_READ_MODE"] = replace(client.props["CCD_READ_MODE"], labels={"PREVIEW": "Preview"})
    assert mi._read_mode_labels(client.properties(DEV)) == ("Preview", "LOW_NOISE")  # the label, else the name
    qhy, client = attach(QHY, "indi_qhy_ccd")
    assert qhy.vocabulary.get("read_mode") is not None and qhy._read_mode_labels(client.properties(DEV)) == ()
