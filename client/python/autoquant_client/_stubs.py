"""The generated protobuf and gRPC modules (written by setup.py when the package is built)."""
try:
    from ._proto import autoquant_pb2 as pb
    from ._proto import autoquant_pb2_grpc as pb_grpc
except ImportError as e:  # a source checkout on sys.path instead of an installed package
    raise ImportError("autoquant_client's gRPC stubs are generated when the package is built: "
                      "install it with `pip install ./client/python` from the autoquant repository") from e

__all__ = ["pb", "pb_grpc"]
