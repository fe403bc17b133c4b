"""What runs inside images under test: Python 3.8+, standard library and pytest only.

Only this subpackage is staged into containers (read-only). Nothing here may import from the
host side of contprobe; tests/test_inimage_boundary.py checks that under the image's Python.
"""
