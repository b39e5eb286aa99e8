"""Generated from proto/ by scripts/gen_proto.py (grpcio-tools 1.85.1, mypy-protobuf 5.1.0); do not edit."""
