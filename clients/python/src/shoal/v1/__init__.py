"""Generated gRPC stubs for ``proto/shoal/v1/shoal.proto`` (do not edit; see
``scripts/gen_stubs.py``)."""
