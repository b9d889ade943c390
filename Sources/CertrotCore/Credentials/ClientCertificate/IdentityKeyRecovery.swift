import BigInt
import Crypto
import Foundation

/// The modem's device identity public key, recovered from its attestations. A modem never prints that key, but
/// every attested KEYGEN answer carries an ECDSA P-256 signature made with it, and an ECDSA signature (r, s) over a
/// digest e admits exactly the public keys Q = r⁻¹(s·R − e·G) for the curve points R whose x is r: two of them
/// (R and −R; an x of r + n would be a third, below p with probability about 2⁻¹²⁸). One answer leaves two
/// candidates; a second answer from the same modem, with another signature, keeps the one they share.
public enum IdentityKeyRecovery {
    /// The public keys under which `message`'s signature verifies: those ECDSA recovery yields, each checked by
    /// verifying the signature with swift-crypto (an implementation of its own). Usually two; empty when the
    /// message is not an ES256 COSE_Sign1 or the signature is malformed.
    public static func candidates(_ message: COSESign1) -> [P256.Signing.PublicKey] {
        guard message.algorithm == COSESign1.es256, message.signature.count == 64 else { return [] }
        let digest = Array(SHA256.hash(data: message.toBeSigned()))
        return candidates(digest: digest, signature: message.signature).filter { message.isValid(for: $0) }
    }

    /// The keys recovered from an ECDSA P-256 signature `r ‖ s` over a SHA-256 `digest` (not checked: see
    /// ``candidates(_:)``).
    static func candidates(digest: [UInt8], signature: [UInt8]) -> [P256.Signing.PublicKey] {
        let curve = P256Curve.shared
        let r = BigUInt(Data(signature[0..<32])), s = BigUInt(Data(signature[32..<64]))
        guard r > 0, r < curve.n, s > 0, s < curve.n, let rInverse = r.inverse(curve.n) else { return [] }
        let e = BigUInt(Data(digest)) % curve.n
        let u1 = (curve.n - (rInverse * e) % curve.n) % curve.n
        let u2 = (rInverse * s) % curve.n
        var keys: [P256.Signing.PublicKey] = []
        for x in [r, r + curve.n] where x < curve.p {
            guard let y = curve.y(forX: x) else { continue }
            for candidateY in [y, curve.p - y] {
                let point = curve.add(
                    curve.multiply(curve.generator, by: u1), curve.multiply(.init(x: x, y: candidateY), by: u2))
                guard let affine = curve.affine(point),
                    let key = try? P256.Signing.PublicKey(
                        x963Representation: [0x04] + bytes32(affine.x) + bytes32(affine.y))
                else { continue }
                keys.append(key)
            }
        }
        return keys
    }

    /// The key every message's signature verifies under, when exactly one does; the candidates otherwise (all of
    /// the first message's when they disagree, so the caller can say which answer does not fit).
    public static func recover(_ messages: [COSESign1]) -> Outcome {
        guard let first = messages.first else { return .none }
        var remaining = candidates(first)
        for message in messages.dropFirst() {
            remaining = remaining.filter { message.isValid(for: $0) }
        }
        switch remaining.count {
        case 0: return .none
        case 1: return .settled(remaining[0])
        default: return .ambiguous(remaining)
        }
    }

    public enum Outcome: Sendable {
        /// One key fits every answer.
        case settled(P256.Signing.PublicKey)
        /// More than one key fits (one answer, or answers that all share the same candidates).
        case ambiguous([P256.Signing.PublicKey])
        /// No key fits every answer: they are not from one modem (or one is not a signature at all).
        case none
    }

    static func bytes32(_ value: BigUInt) -> [UInt8] {
        let raw = Array(value.serialize())
        return [UInt8](repeating: 0, count: max(0, 32 - raw.count)) + raw
    }
}

/// NIST P-256 (SEC 2 secp256r1): y² = x³ − 3x + b over 𝔽p, points in Jacobian coordinates. Only what key recovery
/// needs, correct rather than fast or constant-time: its inputs are public (signatures and digests).
struct P256Curve: Sendable {
    struct Point: Sendable {
        var x: BigUInt
        var y: BigUInt
    }

    /// (X, Y, Z) standing for (X/Z², Y/Z³); Z = 0 is the point at infinity.
    struct Jacobian: Sendable {
        var x: BigUInt
        var y: BigUInt
        var z: BigUInt
        static let infinity = Jacobian(x: 1, y: 1, z: 0)
    }

    static let shared = P256Curve()

    let p = BigUInt("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff", radix: 16)!
    let n = BigUInt("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", radix: 16)!
    let b = BigUInt("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b", radix: 16)!
    let generator = Point(
        x: BigUInt("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296", radix: 16)!,
        y: BigUInt("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5", radix: 16)!)

    func mul(_ a: BigUInt, _ b: BigUInt) -> BigUInt { (a * b) % p }
    func sub(_ a: BigUInt, _ b: BigUInt) -> BigUInt { a >= b ? a - b : p - (b - a) }
    func add(_ a: BigUInt, _ b: BigUInt) -> BigUInt { (a + b) % p }

    /// A y with y² = x³ − 3x + b, nil when x is not on the curve. p ≡ 3 (mod 4), so a root is c^((p+1)/4).
    func y(forX x: BigUInt) -> BigUInt? {
        let c = add(sub(mul(mul(x, x), x), mul(3, x)), b)
        let y = c.power((p + 1) / 4, modulus: p)
        return mul(y, y) == c ? y : nil
    }

    func double(_ point: Jacobian) -> Jacobian {
        guard point.z != 0, point.y != 0 else { return .infinity }
        // dbl-2001-b (a = −3).
        let delta = mul(point.z, point.z)
        let gamma = mul(point.y, point.y)
        let beta = mul(point.x, gamma)
        let alpha = mul(3, mul(sub(point.x, delta), add(point.x, delta)))
        let x3 = sub(mul(alpha, alpha), mul(8, beta))
        let yz = add(point.y, point.z)
        let z3 = sub(sub(mul(yz, yz), gamma), delta)
        let y3 = sub(mul(alpha, sub(mul(4, beta), x3)), mul(8, mul(gamma, gamma)))
        return Jacobian(x: x3, y: y3, z: z3)
    }

    func add(_ a: Jacobian, _ b: Jacobian) -> Jacobian {
        if a.z == 0 { return b }
        if b.z == 0 { return a }
        let z1z1 = mul(a.z, a.z), z2z2 = mul(b.z, b.z)
        let u1 = mul(a.x, z2z2), u2 = mul(b.x, z1z1)
        let s1 = mul(a.y, mul(b.z, z2z2)), s2 = mul(b.y, mul(a.z, z1z1))
        if u1 == u2 { return s1 == s2 ? double(a) : .infinity }
        let h = sub(u2, u1), r = sub(s2, s1)
        let hh = mul(h, h), hhh = mul(h, hh)
        let v = mul(u1, hh)
        let x3 = sub(sub(mul(r, r), hhh), mul(2, v))
        let y3 = sub(mul(r, sub(v, x3)), mul(s1, hhh))
        let z3 = mul(h, mul(a.z, b.z))
        return Jacobian(x: x3, y: y3, z: z3)
    }

    func multiply(_ point: Point, by scalar: BigUInt) -> Jacobian {
        var result = Jacobian.infinity
        let base = Jacobian(x: point.x, y: point.y, z: 1)
        for i in stride(from: scalar.bitWidth - 1, through: 0, by: -1) {
            result = double(result)
            if scalar[bitAt: i] { result = add(result, base) }
        }
        return result
    }

    func affine(_ point: Jacobian) -> Point? {
        guard point.z != 0, let zInverse = point.z.inverse(p) else { return nil }
        let z2 = mul(zInverse, zInverse)
        return Point(x: mul(point.x, z2), y: mul(point.y, mul(z2, zInverse)))
    }
}
