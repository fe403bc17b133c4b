"""contprobe: validation suite for containers on GPU supercomputers.

This module and everything the probe suite imports must stay importable on
Python 3.8 with only the standard library and pytest: it runs inside images.
"""
__version__ = "0.1.0"
