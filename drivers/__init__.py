"""darkd.drivers — camera access: the camera interface, its INDI implementation, and the simulated QHY163M driver.

The daemon depends on :mod:`drivers.camera` only; nothing outside :mod:`drivers.indi` imports ``PyIndi``.
"""
