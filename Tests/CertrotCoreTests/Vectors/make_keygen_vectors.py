#!/usr/bin/env python3
"""Writes keygen.json: AT%KEYGEN outputs made by an implementation independent of certrot (pyca/cryptography
for the key, CSR and ECDSA; cbor2 for CBOR), the way an nRF91 modem makes them. KeygenOutputTests read it.

    pip install cryptography cbor2 && python3 make_keygen_vectors.py > keygen.json
"""
import base64, hashlib, json, os, sys
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def keygen(identity, uuid, tag, legacy=False):
    device = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(uuid_str(uuid)))]))
           .add_extension(x509.KeyUsage(True, True, True, False, True, False, False, False, False), critical=False)
           .sign(device, hashes.SHA256()))
    der = csr.public_bytes(serialization.Encoding.DER)
    if legacy:
        der = legacy_form(der)
    signed_tag = tag - (1 << 32) if tag >= (1 << 31) else tag
    payload = cbor2.dumps([9, uuid, cbor2.dumps(signed_tag), hashlib.sha256(der).digest(), os.urandom(16)])
    protected = cbor2.dumps({1: -7})
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(identity.sign(to_be_signed, ec.ECDSA(hashes.SHA256())))
    cose = cbor2.dumps(cbor2.CBORTag(18, [protected, {4: cbor2.dumps(-2)}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")]))
    return {"keygen": b64url(der) + "." + b64url(cose), "secTag": tag, "legacy": legacy,
            "devicePublicKey": device.public_key().public_bytes(serialization.Encoding.X962,
                                                                serialization.PublicFormat.UncompressedPoint).hex()}

def legacy_form(der):
    normal = bytes.fromhex("300a06082a8648ce3d040302")
    legacy = bytes.fromhex("300c06082a8648ce3d0403020500")
    header = 3 if der[1] == 0x81 else 4
    i = der.rindex(normal)
    body = der[header:i] + legacy + der[i + len(normal):]
    n = len(body)
    return (bytes([0x30, 0x81, n]) if n < 256 else bytes([0x30, 0x82, n >> 8, n & 0xFF])) + body

def uuid_str(uuid):
    h = uuid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

identity = ec.generate_private_key(ec.SECP256R1())
uuid = bytes.fromhex("50503041363342618003d1e2b8c2f5a6")
json.dump({
    "identityPublicKey": identity.public_key().public_bytes(serialization.Encoding.X962,
                                                            serialization.PublicFormat.UncompressedPoint).hex(),
    "uuid": uuid.hex(),
    "outputs": [keygen(identity, uuid, 16842753), keygen(identity, uuid, 4294967280), keygen(identity, uuid, 16842754, legacy=True)],
}, sys.stdout, indent=1)
print()
