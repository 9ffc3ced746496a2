"""Host-side reports: plots and tables that need matplotlib (never imported by the device side).

The device side finds these modules by name (``importlib.util.find_spec``) and skips
what they draw when the host extra is not installed.
"""
