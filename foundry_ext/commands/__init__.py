"""The logic of the ``foundry-ext`` commands; :mod:`foundry_ext.cli` only wires it to the command line."""
