"""The committed stubs match the .proto files, and the protos agree on the wire with the ones
stock tritonclient was built from (same field numbers, types and RPC signatures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protos.generate import GENERATED, PROTO_DIR, PROTOS, generate


def test_committed_stubs_match_generated(tmp_path):
    generate(tmp_path)
    for name in GENERATED:
        committed = (PROTO_DIR / name).read_text()
        assert (tmp_path / name).read_text() == committed, (
            f"protos/{name} is stale: run python -m protos.generate"
        )


def test_stub_imports_are_package_relative():
    text = (PROTO_DIR / "grpc_service_pb2_grpc.py").read_text()
    assert "from protos import grpc_service_pb2" in text
    assert "from protos import model_config_pb2" in (PROTO_DIR / "grpc_service_pb2.py").read_text()


def test_stubs_import_beside_tritonclient_and_agree_on_the_wire():
    """Our stubs live in a private descriptor pool, so both import in one process."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from protos import grpc_service_pb2 as ours

    request = ours.ModelInferRequest(model_name="m", id="7")
    tensor = request.inputs.add(name="q", datatype="BYTES", shape=[1, 1])
    tensor.parameters["p"].bool_param = True
    request.parameters["timeout"].int64_param = 1500
    request.raw_input_contents.append(b"\x01\x00\x00\x00a")
    theirs = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.inputs[0].shape == [1, 1] and theirs.parameters["timeout"].int64_param == 1500
    back = ours.ModelInferRequest.FromString(theirs.SerializeToString())
    assert back == request


def _our_descriptors(tmp_path: Path):
    """Our protos as FileDescriptorProtos, built by protoc without touching the default pool
    (tritonclient registers the same `inference.*` names in this process)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    args = ["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}"]
    assert protoc.main(args + [str(PROTO_DIR / p) for p in PROTOS]) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file}


def _triton_descriptors():
    from google.protobuf import descriptor_pb2

    mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    svc = pytest.importorskip("tritonclient.grpc.service_pb2")
    files = {}
    for module in (mc, svc):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files[proto.name] = proto
    return files


def _messages(prefix, messages):
    for m in messages:
        name = f"{prefix}.{m.name}"
        yield name, m
        yield from _messages(name, m.nested_type)


def _enums(prefix, file_or_msg):
    for e in file_or_msg.enum_type:
        yield f"{prefix}.{e.name}", e
    for m in getattr(file_or_msg, "nested_type", getattr(file_or_msg, "message_type", [])):
        yield from _enums(f"{prefix}.{m.name}", m)


def test_wire_compatible_with_tritonclient(tmp_path):
    ours = _our_descriptors(tmp_path)
    theirs = _triton_descriptors()
    assert set(ours) == set(theirs) == {"grpc_service.proto", "model_config.proto"}
    checked = 0
    for fname, ofile in ours.items():
        tfile = theirs[fname]
        assert ofile.package == tfile.package == "inference"
        tmsgs = dict(_messages(".inference", tfile.message_type))
        for mname, omsg in _messages(".inference", ofile.message_type):
            assert mname in tmsgs, f"{mname} is not in tritonclient's {fname}"
            tfields = {f.name: f for f in tmsgs[mname].field}
            for field in omsg.field:
                tf = tfields.get(field.name)
                assert tf is not None, f"{mname}.{field.name} unknown to tritonclient"
                got = (field.number, field.type, field.label, field.type_name)
                want = (tf.number, tf.type, tf.label, tf.type_name)
                assert got == want, f"{mname}.{field.name}: ours {got}, tritonclient {want}"
                checked += 1
        tenums = dict(_enums(".inference", tfile))
        for ename, oenum in _enums(".inference", ofile):
            tvalues = {v.name: v.number for v in tenums[ename].value}
            for value in oenum.value:
                assert tvalues[value.name] == value.number, f"{ename}.{value.name}"
    assert checked > 100
    (osvc,) = ours["grpc_service.proto"].service
    tsvc = {m.name: m for m in theirs["grpc_service.proto"].service[0].method}
    assert osvc.name == "GRPCInferenceService"
    for method in osvc.method:
        t = tsvc[method.name]
        assert (method.input_type, method.output_type) == (t.input_type, t.output_type)
        assert (method.client_streaming, method.server_streaming) == (
            t.client_streaming,
            t.server_streaming,
        )
