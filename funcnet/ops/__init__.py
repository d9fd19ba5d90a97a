"""The manual ops, one module per family; the public names live in funcnet.gates/nn/losses."""
