"""darkd.daemon — the service: library index, planning, jobs, REST API and CLI.

Depends on :mod:`drivers` (camera access) and :mod:`calib` (calibration maths); never the other way round.
"""
