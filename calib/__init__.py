"""darkd.calib — a pure NumPy/astropy calibration library for cooled CMOS cameras.

No INDI, no HTTP, no database: functions take arrays or FITS paths and return arrays and headers.
Pixel values are ADU (16-bit FITS scale) unless a name says otherwise (``_e`` for electrons).
"""
