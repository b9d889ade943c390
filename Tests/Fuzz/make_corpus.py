#!/usr/bin/env python3
"""Writes the seed corpus for scripts/fuzz into Tests/Fuzz/corpus/<target>/ (small, hand-made valid and invalid
inputs; examples from docs/protocol.md). Needs python3-cryptography. Deterministic except for ECDSA signatures and
the test certificates' keys, so re-running rewrites most files; the committed corpus is what it wrote once.

The signing key is the fuzzing key of Fuzz/Sources/FuzzSupport (generated for fuzzing only)."""
import base64, datetime, hashlib, json, os, pathlib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
FUZZ_KEY = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyGSyoDPeNDTRBxRU
2gsh8cyg0ZzESOe+JruGKdRVEzGhRANCAAR/BCpAinD8lyIQ0gvCACZd3kM2oFz5
4I2RzN6K3EpLIiyzaYzHhVY+swkqMRooELI72hIme99kplHdf0SfByxk
-----END PRIVATE KEY-----
"""
DEVICE = "nrf-352656100000001"  # the device of the fuzz-bundle-check harness
JTI = "9f2c4e61b0a84d7fa3c5e2d1b6f80a47"


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write(target: str, name: str, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def jwk_of(pub):
    n = pub.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big"))}


def kid_of(pub) -> str:
    return b64u(hashlib.sha256(canon(jwk_of(pub))).digest())


def sign(payload: bytes, key, typ="certrot-bundle+jwt") -> str:
    header = '{"alg":"ES256","kid":"%s","typ":"%s"}' % (kid_of(key.public_key()), typ)
    signing_input = b64u(header.encode()) + "." + b64u(payload)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def cert_pem(cn: str, issuer_key=None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x1234).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def main():
    key = serialization.load_pem_private_key(FUZZ_KEY, None)
    other = ec.generate_private_key(ec.SECP256R1())
    root1, root2 = cert_pem("Example Root CA 1"), cert_pem("Example Root CA 2")
    sha = lambda b: hashlib.sha256(b).hexdigest()

    # Inventory (§2) -------------------------------------------------------------------------------------------
    inv = {"v": 1, "seq": 2, "maxMessage": 2048, "creds": [
        {"tag": 42, "type": 0, "sha256": sha(root1), "notAfter": 1767225599},
        {"tag": 16842753, "type": 0, "sha256": sha(root2), "serial": "1234"}], "keys": [kid_of(key.public_key())]}
    write("inventory", "valid-doc", '{"v":1,"seq":2,"maxMessage":2048,"creds":[\n  {"tag":42,"type":0,"sha256":"3c5e0f6e1b0f5e5d0b4a9c2f0e7d8a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f","notAfter":1767225599},\n  {"tag":16842753,"type":0,"sha256":"8ad0a3c5f1e2d4b6a7c8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0"}]}\n')
    write("inventory", "valid-keys", canon(inv))
    write("inventory", "valid-empty", '{"v":1,"seq":0,"creds":[]}')
    write("inventory", "bad-version", '{"v":2,"seq":0,"creds":[]}')
    write("inventory", "bad-dup-tag", canon({**inv, "creds": [inv["creds"][0], inv["creds"][0]]}))
    write("inventory", "bad-type", '{"v":1,"seq":1,"creds":[{"tag":1,"type":7,"sha256":"%s"}]}' % sha(b""))
    write("inventory", "bad-sha-upper", '{"v":1,"seq":1,"creds":[{"tag":1,"type":0,"sha256":"%s"}]}' % sha(b"").upper())
    write("inventory", "bad-maxmessage", '{"v":1,"seq":1,"maxMessage":255,"creds":[]}')
    write("inventory", "bad-keys", '{"v":1,"seq":1,"creds":[],"keys":["a+b",""]}')
    write("inventory", "bad-not-json", '{"v":1,"seq":')
    write("inventory", "bad-nesting", "[" * 600)

    # Ack (§6) -------------------------------------------------------------------------------------------------
    acks = [{"jti": JTI, "status": "applied"},
            {"jti": JTI, "status": "rejected", "reason": "bad_signature: the ES256 signature does not verify"},
            {"jti": JTI, "status": "failed", "code": 518, "reason": "write while online"},
            {"jti": JTI, "status": "incomplete", "missing": [2]}]
    for a in acks:
        write("ack", "valid-" + a["status"], json.dumps(a, separators=(",", ":")))
    write("ack", "bad-incomplete", '{"jti":"%s","status":"incomplete","missing":[0]}' % JTI)
    write("ack", "bad-status", '{"jti":"%s","status":"done"}' % JTI)
    write("ack", "bad-jti", '{"jti":"","status":"applied"}')
    write("ack", "bad-escape", '{"jti":"\\ud800","status":"applied","reason":"\\u0000"}')

    # Bundles (§3) ---------------------------------------------------------------------------------------------
    claims = {"exp": 1765152000 + 10**8, "iat": 1764547200, "iss": "certrot", "jti": JTI, "seq": 3, "sub": DEVICE,
              "ops": [{"op": "write", "pem": root1.decode(), "sha256": sha(root1), "tag": 42, "type": 0}]}
    trust = {**claims, "ops": [{"op": "trust_key", "jwk": jwk_of(other.public_key()), "kid": kid_of(other.public_key())}]}
    delete = {**claims, "ops": [{"op": "delete", "tag": 43, "type": 0},
                                {"op": "write", "pem": (root1 + root2).decode(), "sha256": sha(root1 + root2), "tag": 44, "type": 0}]}
    write("bundle-check", "valid-write", canon(claims))
    write("bundle-check", "valid-trust-key", canon(trust))
    write("bundle-check", "valid-delete-chain", canon(delete))
    write("bundle-check", "bad-sha", canon({**claims, "ops": [{**claims["ops"][0], "sha256": sha(b"x")}]}))
    write("bundle-check", "bad-crlf-pem", canon({**claims, "ops": [{**claims["ops"][0], "pem": root1.decode().replace("\n", "\r\n")}]}))
    write("bundle-check", "bad-trust-kid", canon({**trust, "ops": [{**trust["ops"][0], "kid": kid_of(key.public_key())}]}))
    write("bundle-check", "bad-no-ops", canon({**claims, "ops": []}))

    jws = sign(canon(claims), key)
    write("jws", "valid-write", jws)
    write("jws", "valid-trust-key", sign(canon(trust), key))
    write("jws", "valid-rpc", sign(b'{"jsonrpc":"2.0","id":1,"method":"fleet.status","iat":1764547200,"jti":"a1"}', key, "certrot-rpc+jwt"))
    write("jws", "bad-other-key", sign(canon(claims), other))
    write("jws", "bad-padding", jws.split(".")[0] + "==." + ".".join(jws.split(".")[1:]))
    write("jws", "bad-two-parts", ".".join(jws.split(".")[:2]))
    write("jws", "bad-alg", b64u(b'{"alg":"none","kid":"x","typ":"certrot-bundle+jwt"}') + "." + b64u(canon(claims)) + ".")

    # Parts (§4) -----------------------------------------------------------------------------------------------
    slices = [jws[i:i + 400] for i in range(0, len(jws), 400)]
    parts = [json.dumps({"jti": JTI, "part": i + 1, "parts": len(slices), "data": s}, separators=(",", ":")) for i, s in enumerate(slices)]
    write("bundle-part", "valid-doc", '{"jti":"%s","part":1,"parts":2,"data":"eyJhbGciOiJFUzI1NiIs"}' % JTI)
    write("bundle-part", "valid-last", parts[-1])
    write("bundle-part", "bad-part-zero", '{"jti":"%s","part":0,"parts":2,"data":"x"}' % JTI)
    write("bundle-part", "bad-parts-65", '{"jti":"%s","part":1,"parts":65,"data":"x"}' % JTI)
    write("bundle-part", "bad-part-over", '{"jti":"%s","part":3,"parts":2,"data":"x"}' % JTI)
    write("bundle-part", "bad-huge-int", '{"jti":"%s","part":1,"parts":9223372036854775808,"data":"x"}' % JTI)
    # part-assembler: first byte = capacity / 64, then one part per line.
    write("part-assembler", "in-order", b"\x80" + "\n".join(parts).encode())
    write("part-assembler", "reversed-dup", b"\x80" + "\n".join(parts[::-1] + parts[:1]).encode())
    write("part-assembler", "too-small", b"\x02" + "\n".join(parts).encode())
    other_jti = [p.replace(JTI, "0" * 32) for p in parts]
    write("part-assembler", "interleaved", b"\x80" + "\n".join([parts[0], other_jti[1], parts[1]] + parts[2:]).encode())

    # PEM (§5) -------------------------------------------------------------------------------------------------
    write("pem", "valid-one", root1)
    write("pem", "valid-chain", root1 + root2)
    write("pem", "lenient-crlf-indent", b"subject=CN = Example\r\n" + b"\r\n".join(b"  " + l for l in root1.split(b"\n")))
    write("pem", "bad-label", root1.replace(b"CERTIFICATE", b"X509 CRL"))
    write("pem", "bad-end", root1.replace(b"-----END CERTIFICATE-----", b"-----END CERTIFICATES-----"))
    write("pem", "bad-header", root1.replace(b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\n", 1))
    write("pem", "bad-key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).replace(b"MIGH", b"MIGI"))
    write("pem", "bad-truncated-der", b"-----BEGIN CERTIFICATE-----\nMIIBTDCB86ADAgECAgISNDAKBggqhkjOPQQDAjAlMSMwIQYDVQQDDBpFeGFtcGxl\n-----END CERTIFICATE-----\n")

    # Base64url ------------------------------------------------------------------------------------------------
    for name, text in {"header": jws.split(".")[0], "sig": jws.split(".")[2], "empty": "", "one": "QQ",
                       "bad-bits": "QR", "bad-padding": "QQ==", "bad-plus": "a+/b", "bad-len": "A"}.items():
        write("base64url", name, text)


if __name__ == "__main__":
    main()
