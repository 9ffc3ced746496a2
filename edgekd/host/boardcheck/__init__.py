"""Board check: a bundle's artifacts run on the target board's instruction set (qemu-user) vs the host.

``env`` builds and caches the emulated board environment, ``runner`` is the script that runs inside it
(stdlib + numpy + the interpreter only), ``check`` compares and records, ``cli`` is ``edgekd bundle check``.
"""
