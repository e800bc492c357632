"""Camera characterisation (the reference paper's Part 1): read noise, gain, dark current that cannot go negative,
dark-mean ladder (black-point over-correction, dark-scaling verdict), temperature doubling and amp-glow diagnostics.

Pure NumPy/astropy; frames are read with :func:`calib.frames.read_frame`. Every ``measure_*`` function returns a
JSON-ready ``dict`` (see :mod:`calib.measure.report` for the table text).
"""
