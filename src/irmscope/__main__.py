"""``python -m irmscope`` is the ``irmscope`` command."""

from irmscope.cli import main

main()
