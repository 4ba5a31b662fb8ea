"""The pure core: functions of plain values, with no I/O, clocks or network.

Everything here is deterministic and synchronous; the shell around it (`manifests`, and later
the store, the reconciler and the web layer) does the I/O once and hands the results in.
"""
