"""gRPC server reflection over a descriptor pool that also finds the file of an RPC method.

grpcurl asks reflection for the file containing the symbol it is given, so `grpcurl describe
queue_manager.v1.QueueService.UpdateJobData` asks for a method's full name. protobuf's upb descriptor
pool knows services, messages, enums and fields by name but not methods, so grpcio-reflection answered
NOT_FOUND ("Symbol not found") for every RPC. The pool here answers a method's name with its service's
file, as the C++ and Go reflection services do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection

__all__ = ["SERVICE_NAME", "enable_reflection"]

SERVICE_NAME: str = reflection.SERVICE_NAME


class _MethodAwarePool:
    """A descriptor pool whose `FindFileContainingSymbol` also takes ``package.Service.Method``; every
    other lookup goes to the wrapped pool unchanged."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service_name, _, method = name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                pass
            else:
                if method in service.methods_by_name:
                    return service.file
            raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._pool, attr)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection for `service_names` (fully qualified) on `server`, methods included."""
    pool = _MethodAwarePool(descriptor_pool.Default())
    reflection.enable_server_reflection(list(service_names), server, pool=pool)
