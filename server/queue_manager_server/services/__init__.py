"""gRPC servicers: thin adapters from protobuf requests to the engine."""
