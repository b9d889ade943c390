import CPKCS11
import CertrotCore
import Crypto
import Dispatch
import Foundation
import Synchronization
import X509
import _CryptoExtras

/// A loaded PKCS#11 module: loaded and initialised once per path for the life of the process (C_Initialize may be
/// called once per process, and several keys can live behind one module).
///
/// A token that went away is seen again only after the module is initialised anew (C_Finalize, C_Initialize),
/// which ends every session and may give old handle numbers to new objects. So each initialisation has a
/// generation; sessions and handles are used only under ``read(_:)`` with the generation they were made in, and
/// ``reinitialize(seen:)`` waits for every such use to end.
final class PKCS11Module: @unchecked Sendable {
    let path: String
    let handle: OpaquePointer
    // `generation` and `lastReinit` change only under the write lock. The lock lives at a fixed address (never
    // freed: a module stays loaded for the life of the process).
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    private var generation = 0
    private var lastReinit: UInt64 = 0

    private init(path: String, handle: OpaquePointer) {
        self.path = path
        self.handle = handle
        pthread_rwlock_init(lock, nil)
    }

    private static let loaded = Mutex<[String: PKCS11Module]>([:])

    static func shared(_ path: String) throws(CertrotError) -> PKCS11Module {
        let result: Result<PKCS11Module, CertrotError> = loaded.withLock { modules in
            if let module = modules[path] { return .success(module) }
            var handle: OpaquePointer?
            var error = [CChar](repeating: 0, count: 512)
            let rv = certrot_p11_load(path, &handle, &error, error.count)
            guard rv == ReturnCode.ok, let handle else {
                let detail =
                    rv == ReturnCode.dlError
                    ? String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    : "C_Initialize: \(ReturnCode.name(rv))"
                return .failure(
                    CertrotError(.signerUnavailable, "PKCS#11 module \(path) cannot be loaded: \(detail)"))
            }
            let module = PKCS11Module(path: path, handle: handle)
            modules[path] = module
            return .success(module)
        }
        return try result.get()
    }

    /// Runs `body` with the current generation; no reinitialisation happens meanwhile.
    func read<T, E: Error>(_ body: (Int) throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body(generation)
    }

    /// Initialises the module anew, unless someone already did since `seen` or did less than a second ago.
    func reinitialize(seen: Int) {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        let now = DispatchTime.now().uptimeNanoseconds
        guard generation == seen, lastReinit == 0 || now - lastReinit >= 1_000_000_000 else { return }
        _ = certrot_p11_reinitialize(handle)
        lastReinit = now
        generation += 1
    }
}

/// A private key in a PKCS#11 token: P-256 (bundles, checkpoints, certificates), or P-384 or RSA (an issuing CA's
/// certificates and CRLs). Every signature is `C_Sign` over a digest computed here — `CKM_ECDSA` over SHA-256 or
/// SHA-384, `CKM_RSA_PKCS` over the SHA-256 DigestInfo — so the private key never enters certrot's memory. Each
/// signature is verified under the key's public key before it is returned: a faulty token, or a handle that has
/// come to name another object, cannot put a wrong signature on a bundle or a certificate.
///
/// Sessions are pooled (`sessions` at most, opened on demand, one signature at a time each). When a call fails
/// with a code that means the session or the token is gone (`CKR_DEVICE_REMOVED`, `CKR_SESSION_HANDLE_INVALID`,
/// `CKR_OBJECT_HANDLE_INVALID`, …), every session is dropped and the next signature reconnects: the token found by
/// the URI (the module initialised anew when it is not there), logged in, the key found again and its public key
/// compared with the one loaded at start. A different key is refused, so nothing is signed with another key.
/// Reconnects are at most one a second; until one succeeds, ``problem`` says why, naming the URI and the return
/// code, and signing throws ``CertrotError/Code/signerUnavailable``.
public final class TokenKey: ExternalSigner, ExternalIssuerSigner, @unchecked Sendable {
    public let uri: PKCS11URI
    /// The key's public half, as found beside the private key.
    public let key: TokenPublicKey
    public var location: String { uri.text }
    public var kind: IssuerKey.Kind { key.kind }
    public var certificatePublicKey: Certificate.PublicKey { key.certificateKey }

    /// The P-256 public key (``ExternalSigner``): only a P-256 token key becomes a ``SigningKey`` (``open(uri:pin:sessions:)``
    /// with `p256Only`), so this is never asked of another kind.
    public var publicKey: P256.Signing.PublicKey {
        guard case .p256(let key) = key else { preconditionFailure("\(uri): a \(kind.name) key is not a P-256 key") }
        return key
    }
    private let module: PKCS11Module
    private let pin: [UInt8]
    private let permits: DispatchSemaphore
    private let state: Mutex<State>

    struct State {
        /// Nil until connected, and after a failure that lost the sessions.
        var connection: Connection?
        var idle: [UInt] = []
        var problem: String?
        var lastAttempt: UInt64 = 0
    }

    struct Connection {
        var slot: UInt
        var key: UInt
        /// The module's generation the handles belong to.
        var generation: Int
    }

    /// Opens the key: the module loaded, the token found, logged in, the private key and its public key found, and a
    /// test signature verified, so that a wrong key or PIN is an error at start rather than at the first bundle.
    /// - Parameter p256Only: refuse any other kind of key (a bundle-signing key: the device contract is ES256).
    public static func open(
        uri: PKCS11URI, pin: [UInt8], sessions: Int = 4, p256Only: Bool = true
    ) throws(CertrotError) -> TokenKey {
        let module = try PKCS11Module.shared(uri.modulePath)
        let (connection, session, publicKey) = try module.read { generation throws(CertrotError) in
            try connect(module: module, generation: generation, uri: uri, pin: pin, expected: nil)
        }
        let key = TokenKey(
            uri: uri, module: module, pin: pin, sessions: sessions, key: publicKey, connection: connection,
            session: session)
        guard !p256Only || key.kind == .p256 else {
            throw CertrotError(.invalidKey, "\(uri) is a \(key.kind.name) key; this key must be P-256 (ES256)")
        }
        _ = try key.signCertificate(Array("certrot token self-test".utf8))
        return key
    }

    private init(
        uri: PKCS11URI, module: PKCS11Module, pin: [UInt8], sessions: Int, key: TokenPublicKey,
        connection: Connection, session: UInt
    ) {
        self.uri = uri
        self.module = module
        self.pin = pin
        self.key = key
        permits = DispatchSemaphore(value: max(1, sessions))
        state = Mutex(State(connection: connection, idle: [session]))
    }

    public var problem: String? { state.withLock { $0.problem } }

    /// Why a signature was not made, and whether a new module initialisation might help.
    private struct Failure: Error {
        var error: CertrotError
        var tokenMissing = false
        var generation = 0
    }

    /// ES256 over a digest (``ExternalSigner``: bundles and checkpoints); a P-256 key only.
    public func sign(digest: SHA256Digest) throws(CertrotError) -> P256.Signing.ECDSASignature {
        guard case .p256(let key) = key else {
            throw CertrotError(.invalidKey, "\(uri): a \(kind.name) key does not sign ES256")
        }
        let raw = try signature(mechanism: CERTROT_P11_CKM_ECDSA, input: Array(digest), capacity: 132) { raw in
            raw.count == 64
                && (try? P256.Signing.ECDSASignature(rawRepresentation: raw)).map {
                    key.isValidSignature($0, for: digest)
                }
                    == true
        }
        return try! P256.Signing.ECDSASignature(rawRepresentation: raw)  // verified above
    }

    /// DigestInfo for SHA-256 (RFC 8017 §9.2), before the digest: what CKM_RSA_PKCS signs for sha256WithRSAEncryption.
    static let sha256DigestInfo: [UInt8] = [
        0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ]

    /// The signature a certificate or CRL carries for `bytes` (``ExternalIssuerSigner``): the DER ECDSA-Sig-Value
    /// (ecdsa-with-SHA256 or -SHA384) or the RSA signature (sha256WithRSAEncryption, PKCS#1 v1.5).
    public func signCertificate(_ bytes: [UInt8]) throws(CertrotError) -> [UInt8] {
        switch key {
        case .p256:
            return Array(try sign(digest: SHA256.hash(data: bytes)).derRepresentation)
        case .p384(let key):
            let digest = SHA384.hash(data: bytes)
            let raw = try signature(mechanism: CERTROT_P11_CKM_ECDSA, input: Array(digest), capacity: 132) { raw in
                raw.count == 96
                    && (try? P384.Signing.ECDSASignature(rawRepresentation: raw)).map {
                        key.isValidSignature($0, for: digest)
                    } == true
            }
            return Array(try! P384.Signing.ECDSASignature(rawRepresentation: raw).derRepresentation)  // verified above
        case .rsa(let key):
            let digest = SHA256.hash(data: bytes)
            return try signature(
                mechanism: CERTROT_P11_CKM_RSA_PKCS, input: Self.sha256DigestInfo + Array(digest), capacity: 1024
            ) { raw in
                key.isValidSignature(
                    _RSA.Signing.RSASignature(rawRepresentation: raw), for: digest, padding: .insecurePKCS1v1_5)
            }
        }
    }

    /// `C_Sign` with `mechanism` over `input`, returning only a signature `verify` accepts.
    private func signature(
        mechanism: UInt, input: [UInt8], capacity: Int, verify: ([UInt8]) -> Bool
    ) throws(CertrotError) -> [UInt8] {
        permits.wait()
        defer { permits.signal() }
        var last: CertrotError?
        // The first attempt may find the sessions gone (and reconnect); the second may follow a reinitialisation.
        for _ in 0..<3 {
            let outcome: Result<[UInt8], Failure> = module.read { generation in
                attempt(mechanism: mechanism, input: input, capacity: capacity, verify: verify, generation: generation)
            }
            switch outcome {
            case .success(let signature):
                state.withLock { $0.problem = nil }
                return signature
            case .failure(let failure):
                last = failure.error
                state.withLock { $0.problem = failure.error.message }
                if failure.tokenMissing {
                    // Not found: perhaps back since the module last looked. Look again at once.
                    module.reinitialize(seen: failure.generation)
                    state.withLock { $0.lastAttempt = 0 }
                } else if failure.error.code != .signerUnavailable || !failure.error.message.contains("C_Sign") {
                    throw failure.error
                }
            }
        }
        throw last!
    }

    /// One signature with the module's current `generation`.
    private func attempt(
        mechanism: UInt, input: [UInt8], capacity: Int, verify: ([UInt8]) -> Bool, generation: Int
    ) -> Result<[UInt8], Failure> {
        let session: UInt
        let key: UInt
        do {
            (session, key) = try checkOut(generation: generation)
        } catch {
            return .failure(error)
        }
        var signature = [UInt8](repeating: 0, count: capacity)
        var length = signature.count
        let rv = certrot_p11_sign(module.handle, session, key, mechanism, input, input.count, &signature, &length)
        if rv == ReturnCode.ok, length <= capacity, verify(Array(signature.prefix(length))) {
            state.withLock { state in
                if state.connection?.generation == generation { state.idle.append(session) }
            }
            return .success(Array(signature.prefix(length)))
        }
        _ = certrot_p11_close_session(module.handle, session)
        if rv == ReturnCode.ok {
            // Signed, but not by this key (or not a signature of its kind): never used; the sessions are dropped.
            drop(generation: generation)
            return .failure(
                Failure(
                    error: CertrotError(
                        .signerUnavailable, "\(uri): C_Sign returned a signature that does not verify; not used"),
                    generation: generation))
        }
        if ReturnCode.losesSession(rv) { drop(generation: generation) }
        return .failure(Failure(error: failure("C_Sign", rv), generation: generation))
    }

    /// A session and the key's handle, both of `generation`: an idle session, a new one, or a reconnect.
    private func checkOut(generation: Int) throws(Failure) -> (session: UInt, key: UInt) {
        enum Next {
            case ready(UInt, UInt)
            case open(Connection)
            case reconnect
            case wait(String)
        }
        let now = DispatchTime.now().uptimeNanoseconds
        let next: Next = state.withLock { state in
            if let connection = state.connection, connection.generation != generation {
                // The module was initialised anew: these handles are void (and must not be closed, as their numbers
                // may now be another key's).
                state.connection = nil
                state.idle = []
            }
            if let connection = state.connection {
                if let session = state.idle.popLast() { return .ready(session, connection.key) }
                return .open(connection)
            }
            if state.lastAttempt != 0, now - state.lastAttempt < 1_000_000_000 {
                return .wait(state.problem ?? "\(uri): reconnecting to the token")
            }
            state.lastAttempt = now
            return .reconnect
        }
        switch next {
        case .ready(let session, let key):
            return (session, key)
        case .open(let connection):
            do {
                return (
                    try Self.loggedInSession(module: module, slot: connection.slot, uri: uri, pin: pin), connection.key
                )
            } catch {
                drop(generation: generation)
                throw Failure(error: error, generation: generation)
            }
        case .reconnect:
            do {
                let (connection, session, _) = try Self.connect(
                    module: module, generation: generation, uri: uri, pin: pin, expected: key)
                state.withLock { $0.connection = connection }
                return (session, connection.key)
            } catch {
                throw Failure(error: error, tokenMissing: error.code == .signerUnavailable, generation: generation)
            }
        case .wait(let problem):
            throw Failure(error: CertrotError(.signerUnavailable, problem), generation: generation)
        }
    }

    /// Forgets the sessions of `generation` (closing the idle ones) so that the next signature reconnects.
    private func drop(generation: Int) {
        let idle: [UInt] = state.withLock { state in
            guard state.connection?.generation == generation else { return [] }
            state.connection = nil
            defer { state.idle = [] }
            return state.idle
        }
        for session in idle { _ = certrot_p11_close_session(module.handle, session) }
    }

    private func failure(_ call: String, _ rv: UInt) -> CertrotError {
        Self.failure(uri, call, rv)
    }

    static func failure(_ uri: PKCS11URI, _ call: String, _ rv: UInt) -> CertrotError {
        CertrotError(.signerUnavailable, "\(uri): \(call) failed: \(ReturnCode.name(rv))")
    }

    /// A new logged-in session on `slot`.
    static func loggedInSession(
        module: PKCS11Module, slot: UInt, uri: PKCS11URI, pin: [UInt8]
    ) throws(CertrotError) -> UInt {
        var session: UInt = 0
        let opened = certrot_p11_open_session(module.handle, slot, &session)
        guard opened == ReturnCode.ok else { throw failure(uri, "C_OpenSession", opened) }
        let login = pin.withUnsafeBufferPointer { pin in
            pin.withMemoryRebound(to: CChar.self) {
                certrot_p11_login(module.handle, session, $0.baseAddress, $0.count)
            }
        }
        guard login == ReturnCode.ok else {
            _ = certrot_p11_close_session(module.handle, session)
            throw failure(uri, "C_Login", login)
        }
        return session
    }

    /// Finds the token and the key, opens a logged-in session and reads the public key (which must equal `expected`
    /// when one is given).
    static func connect(
        module: PKCS11Module, generation: Int, uri: PKCS11URI, pin: [UInt8], expected: TokenPublicKey?
    ) throws(CertrotError) -> (Connection, UInt, TokenPublicKey) {
        let session = try openSession(module: module, uri: uri, pin: pin)
        do {
            let (key, publicKey) = try findKey(module: module, session: session.session, uri: uri)
            if let expected, expected.identity != publicKey.identity {
                throw CertrotError(
                    .invalidKey,
                    "\(uri): the token now holds a different key than at start; refusing to sign with it")
            }
            return (Connection(slot: session.slot, key: key, generation: generation), session.session, publicKey)
        } catch let error as CertrotError {
            _ = certrot_p11_close_session(module.handle, session.session)
            throw error
        } catch {
            _ = certrot_p11_close_session(module.handle, session.session)
            throw CertrotError(.invalidKey, "\(uri): \(error)")
        }
    }

    /// The token's slot and a logged-in read-write session on it.
    static func openSession(
        module: PKCS11Module, uri: PKCS11URI, pin: [UInt8]
    ) throws(CertrotError) -> (slot: UInt, session: UInt) {
        var slot: UInt = 0
        var matches: UInt = 0
        let rv = certrot_p11_find_slot(
            module.handle, uri.token, uri.serial, uri.manufacturer, uri.model, uri.slotID ?? -1, &slot, &matches)
        guard rv == ReturnCode.ok else { throw failure(uri, "C_GetSlotList", rv) }
        guard matches > 0 else {
            throw CertrotError(.signerUnavailable, "\(uri): no token matches (CKR_TOKEN_NOT_PRESENT)")
        }
        guard matches == 1 else {
            throw CertrotError(.invalidConfig, "\(uri): \(matches) tokens match; add serial= or slot-id=")
        }
        return (slot, try loggedInSession(module: module, slot: slot, uri: uri, pin: pin))
    }

    /// The one private key the URI names (EC, else RSA), and the public key of the same CKA_ID (or label).
    static func findKey(
        module: PKCS11Module, session: UInt, uri: PKCS11URI
    ) throws(CertrotError) -> (UInt, TokenPublicKey) {
        var type = CERTROT_P11_KEY_EC
        var privateKeys = try objects(module: module, session: session, uri: uri, class: 3, type: type, id: uri.id)
        if privateKeys.isEmpty {
            type = CERTROT_P11_KEY_RSA
            privateKeys = try objects(module: module, session: session, uri: uri, class: 3, type: type, id: uri.id)
        }
        guard privateKeys.count == 1, let key = privateKeys.first else {
            throw CertrotError(
                privateKeys.isEmpty ? .signerUnavailable : .invalidConfig,
                privateKeys.isEmpty
                    ? "\(uri): no EC or RSA private key with this object/id in the token"
                    : "\(uri): \(privateKeys.count) private keys match; add id=")
        }
        // The public half: by the private key's CKA_ID when it has one, else by the URI.
        let id = attribute(module: module, session: session, handle: key, type: 0x102).flatMap { $0.isEmpty ? nil : $0 }
        var publicKeys = try objects(module: module, session: session, uri: uri, class: 2, type: type, id: id ?? uri.id)
        if publicKeys.isEmpty, id != nil {
            publicKeys = try objects(module: module, session: session, uri: uri, class: 2, type: type, id: uri.id)
        }
        guard publicKeys.count == 1 else {
            throw CertrotError(.invalidKey, "\(uri): no single public key object beside the private key")
        }
        let publicKey: TokenPublicKey?
        if type == CERTROT_P11_KEY_RSA {
            publicKey =
                if let modulus = attribute(module: module, session: session, handle: publicKeys[0], type: 0x120),
                    let exponent = attribute(module: module, session: session, handle: publicKeys[0], type: 0x122),
                    let rsa = try? _RSA.Signing.PublicKey(n: modulus, e: exponent)
                { .rsa(rsa) } else { nil }
        } else {
            publicKey = attribute(module: module, session: session, handle: publicKeys[0], type: 0x181).flatMap(ecPoint)
        }
        guard let publicKey else {
            throw CertrotError(
                .invalidKey,
                "\(uri): the public key beside the private key is not P-256, P-384 or RSA (CKA_EC_POINT, CKA_MODULUS)")
        }
        if let bits = publicKey.rsaBits, ![2048, 3072, 4096].contains(bits) {
            throw CertrotError(.invalidKey, "\(uri): an RSA key must have 2048, 3072 or 4096 bits (this one: \(bits))")
        }
        return (key, publicKey)
    }

    static func objects(
        module: PKCS11Module, session: UInt, uri: PKCS11URI, class klass: UInt, type: UInt, id: [UInt8]?
    ) throws(CertrotError) -> [UInt] {
        var handles = [UInt](repeating: 0, count: 8)
        var count: UInt = 0
        let rv: UInt =
            if let id {
                certrot_p11_find_keys(
                    module.handle, session, klass, type, uri.object, id, id.count, &handles, UInt(handles.count),
                    &count)
            } else {
                certrot_p11_find_keys(
                    module.handle, session, klass, type, uri.object, nil, 0, &handles, UInt(handles.count), &count)
            }
        guard rv == ReturnCode.ok else { throw failure(uri, "C_FindObjects", rv) }
        return Array(handles.prefix(Int(count)))
    }

    static func attribute(module: PKCS11Module, session: UInt, handle: UInt, type: UInt) -> [UInt8]? {
        var value = [UInt8](repeating: 0, count: 1024)
        var length = value.count
        guard certrot_p11_attribute(module.handle, session, handle, type, &value, &length) == ReturnCode.ok,
            length <= value.count
        else { return nil }
        return Array(value.prefix(length))
    }

    /// CKA_EC_POINT is the DER OCTET STRING of the uncompressed point (some modules give the bare point): 65 bytes
    /// for P-256, 97 for P-384.
    static func ecPoint(_ value: [UInt8]) -> TokenPublicKey? {
        var point = value
        if point.count == 67, point[0] == 0x04, point[1] == 0x41 { point = Array(point[2...]) }
        if point.count == 99, point[0] == 0x04, point[1] == 0x61 { point = Array(point[2...]) }
        guard point.first == 0x04 else { return nil }
        if point.count == 65, let key = try? P256.Signing.PublicKey(x963Representation: point) { return .p256(key) }
        if point.count == 97, let key = try? P384.Signing.PublicKey(x963Representation: point) { return .p384(key) }
        return nil
    }

    /// Makes a key pair of `kind` (P-256 unless asked) inside the token under the URI's `object` label (and `id`, or
    /// 8 random bytes), refusing when a private key of that label or id is already there; then opens it.
    public static func generate(
        uri: PKCS11URI, pin: [UInt8], kind: IssuerKey.Kind = .p256
    ) throws(CertrotError) -> TokenKey {
        guard let label = uri.object else {
            throw CertrotError(.invalidConfig, "\(uri): generating a key needs object= (its label)")
        }
        let module = try PKCS11Module.shared(uri.modulePath)
        try module.read { _ throws(CertrotError) in
            try generatePair(module: module, uri: uri, label: label, pin: pin, kind: kind)
        }
        return try open(uri: uri, pin: pin, sessions: 1, p256Only: kind == .p256)
    }

    /// The DER of the named curves' OIDs: prime256v1 (1.2.840.10045.3.1.7), secp384r1 (1.3.132.0.34).
    static let p256Curve: [UInt8] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
    static let p384Curve: [UInt8] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22]

    private static func generatePair(
        module: PKCS11Module, uri: PKCS11URI, label: String, pin: [UInt8], kind: IssuerKey.Kind
    ) throws(CertrotError) {
        let session = try openSession(module: module, uri: uri, pin: pin)
        defer { _ = certrot_p11_close_session(module.handle, session.session) }
        var byLabel = uri
        byLabel.id = nil
        func privateKeys(_ uri: PKCS11URI, id: [UInt8]?) throws(CertrotError) -> [UInt] {
            var found: [UInt] = []
            for type in [CERTROT_P11_KEY_EC, CERTROT_P11_KEY_RSA] {
                found += try objects(module: module, session: session.session, uri: uri, class: 3, type: type, id: id)
            }
            return found
        }
        let sameLabel = try privateKeys(byLabel, id: nil)
        var byID = uri
        byID.object = nil
        let sameID = try uri.id.map { id throws(CertrotError) in
            try privateKeys(byID, id: id)
        }
        if !sameLabel.isEmpty || !(sameID ?? []).isEmpty {
            throw CertrotError(
                .invalidKey, "\(uri): the token already holds a private key '\(label)'; refusing to add another")
        }
        let id = uri.id ?? (0..<8).map { _ in UInt8.random(in: 0...255) }
        var publicHandle: UInt = 0
        var privateHandle: UInt = 0
        let rv: UInt
        switch kind {
        case .p256, .p384:
            let curve = kind == .p256 ? p256Curve : p384Curve
            rv = certrot_p11_generate_ec(
                module.handle, session.session, curve, curve.count, label, id, id.count, &publicHandle, &privateHandle)
        case .rsa2048, .rsa3072, .rsa4096:
            let bits: UInt = kind == .rsa2048 ? 2048 : kind == .rsa3072 ? 3072 : 4096
            rv = certrot_p11_generate_rsa(
                module.handle, session.session, bits, label, id, id.count, &publicHandle, &privateHandle)
        }
        guard rv == ReturnCode.ok else { throw failure(uri, "C_GenerateKeyPair", rv) }
    }
}

/// A token key's public half.
public enum TokenPublicKey: Sendable {
    case p256(P256.Signing.PublicKey)
    case p384(P384.Signing.PublicKey)
    case rsa(_RSA.Signing.PublicKey)

    public var kind: IssuerKey.Kind {
        switch self {
        case .p256: .p256
        case .p384: .p384
        case .rsa(let key): key.keySizeInBits == 2048 ? .rsa2048 : key.keySizeInBits == 3072 ? .rsa3072 : .rsa4096
        }
    }

    /// An RSA key's size, nil for an EC key.
    var rsaBits: Int? {
        if case .rsa(let key) = self { return key.keySizeInBits }
        return nil
    }

    public var certificateKey: Certificate.PublicKey {
        switch self {
        case .p256(let key): Certificate.PublicKey(key)
        case .p384(let key): Certificate.PublicKey(key)
        case .rsa(let key): Certificate.PublicKey(key)
        }
    }

    /// Bytes that name the key (the point, or the SubjectPublicKeyInfo): equal only for the same key.
    var identity: [UInt8] {
        switch self {
        case .p256(let key): Array(key.x963Representation)
        case .p384(let key): Array(key.x963Representation)
        case .rsa(let key): Array(key.derRepresentation)
        }
    }
}
