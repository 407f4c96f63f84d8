"""The descriptor pool of pipectl's KServe v2 protos.

The generated stubs register into this private pool instead of protobuf's default one, because
tritonclient registers its own `grpc_service.proto` / `inference.*` there: with both in the
default pool, importing pipectl's server and tritonclient in one process fails with "duplicate
file name". Messages from either side are wire-compatible all the same.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
