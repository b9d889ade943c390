import CPKCS11
import CertrotCore
import Crypto
import Dispatch
import Foundation
import Synchronization

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

/// A P-256 private key in a PKCS#11 token: every signature is `C_Sign` with `CKM_ECDSA` over a SHA-256 digest
/// computed here, so the private key never enters certrot's memory. Each signature is verified under the key's
/// public key before it is returned: a faulty token, or a handle that has come to name another object, cannot
/// put a wrong signature on a bundle.
///
/// Sessions are pooled (`sessions` at most, opened on demand, one signature at a time each). When a call fails
/// with a code that means the session or the token is gone (`CKR_DEVICE_REMOVED`, `CKR_SESSION_HANDLE_INVALID`,
/// `CKR_OBJECT_HANDLE_INVALID`, …), every session is dropped and the next signature reconnects: the token found by
/// the URI (the module initialised anew when it is not there), logged in, the key found again and its public key
/// compared with the one loaded at start. A different key is refused, so nothing is signed with another key.
/// Reconnects are at most one a second; until one succeeds, ``problem`` says why, naming the URI and the return
/// code, and signing throws ``CertrotError/Code/signerUnavailable``.
public final class TokenKey: ExternalSigner, @unchecked Sendable {
    public let uri: PKCS11URI
    public let publicKey: P256.Signing.PublicKey
    public var location: String { uri.text }
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
    public static func open(uri: PKCS11URI, pin: [UInt8], sessions: Int = 4) throws(CertrotError) -> TokenKey {
        let module = try PKCS11Module.shared(uri.modulePath)
        let (connection, session, publicKey) = try module.read { generation throws(CertrotError) in
            try connect(module: module, generation: generation, uri: uri, pin: pin, expected: nil)
        }
        let key = TokenKey(
            uri: uri, module: module, pin: pin, sessions: sessions, publicKey: publicKey, connection: connection,
            session: session)
        _ = try key.sign(digest: SHA256.hash(data: Array("certrot token self-test".utf8)))
        return key
    }

    private init(
        uri: PKCS11URI, module: PKCS11Module, pin: [UInt8], sessions: Int, publicKey: P256.Signing.PublicKey,
        connection: Connection, session: UInt
    ) {
        self.uri = uri
        self.module = module
        self.pin = pin
        self.publicKey = publicKey
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

    public func sign(digest: SHA256Digest) throws(CertrotError) -> P256.Signing.ECDSASignature {
        permits.wait()
        defer { permits.signal() }
        var last: CertrotError?
        // The first attempt may find the sessions gone (and reconnect); the second may follow a reinitialisation.
        for _ in 0..<3 {
            let outcome: Result<P256.Signing.ECDSASignature, Failure> = module.read { generation in
                attempt(digest: digest, generation: generation)
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
    private func attempt(digest: SHA256Digest, generation: Int) -> Result<P256.Signing.ECDSASignature, Failure> {
        let session: UInt
        let key: UInt
        do {
            (session, key) = try checkOut(generation: generation)
        } catch {
            return .failure(error)
        }
        var signature = [UInt8](repeating: 0, count: 128)
        var length = signature.count
        let bytes = Array(digest)
        let rv = certrot_p11_sign_ecdsa(module.handle, session, key, bytes, bytes.count, &signature, &length)
        if rv == ReturnCode.ok, length == 64,
            let result = try? P256.Signing.ECDSASignature(rawRepresentation: signature.prefix(64)),
            publicKey.isValidSignature(result, for: digest)
        {
            state.withLock { state in
                if state.connection?.generation == generation { state.idle.append(session) }
            }
            return .success(result)
        }
        _ = certrot_p11_close_session(module.handle, session)
        if rv == ReturnCode.ok {
            // Signed, but not by this key (or not a P-256 signature): never used; the sessions are dropped.
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
                    module: module, generation: generation, uri: uri, pin: pin, expected: publicKey)
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
        module: PKCS11Module, generation: Int, uri: PKCS11URI, pin: [UInt8], expected: P256.Signing.PublicKey?
    ) throws(CertrotError) -> (Connection, UInt, P256.Signing.PublicKey) {
        let session = try openSession(module: module, uri: uri, pin: pin)
        do {
            let (key, publicKey) = try findKey(module: module, session: session.session, uri: uri)
            if let expected, expected.rawRepresentation != publicKey.rawRepresentation {
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

    /// The one EC private key the URI names, and the public key of the same CKA_ID (or label).
    static func findKey(
        module: PKCS11Module, session: UInt, uri: PKCS11URI
    ) throws(CertrotError) -> (UInt, P256.Signing.PublicKey) {
        let privateKeys = try objects(module: module, session: session, uri: uri, class: 3, id: uri.id)
        guard privateKeys.count == 1, let key = privateKeys.first else {
            throw CertrotError(
                privateKeys.isEmpty ? .signerUnavailable : .invalidConfig,
                privateKeys.isEmpty
                    ? "\(uri): no EC private key with this object/id in the token"
                    : "\(uri): \(privateKeys.count) private keys match; add id=")
        }
        // The public half: by the private key's CKA_ID when it has one, else by the URI.
        let id = attribute(module: module, session: session, handle: key, type: 0x102).flatMap { $0.isEmpty ? nil : $0 }
        var publicKeys = try objects(module: module, session: session, uri: uri, class: 2, id: id ?? uri.id)
        if publicKeys.isEmpty, id != nil {
            publicKeys = try objects(module: module, session: session, uri: uri, class: 2, id: uri.id)
        }
        guard publicKeys.count == 1,
            let point = attribute(
                module: module, session: session, handle: publicKeys[0], type: 0x181),
            let publicKey = ecPoint(point)
        else {
            throw CertrotError(
                .invalidKey, "\(uri): no single P-256 public key object beside the private key (CKA_EC_POINT)")
        }
        return (key, publicKey)
    }

    static func objects(
        module: PKCS11Module, session: UInt, uri: PKCS11URI, class klass: UInt, id: [UInt8]?
    ) throws(CertrotError) -> [UInt] {
        var handles = [UInt](repeating: 0, count: 8)
        var count: UInt = 0
        let rv: UInt =
            if let id {
                certrot_p11_find_keys(
                    module.handle, session, klass, uri.object, id, id.count, &handles, UInt(handles.count), &count)
            } else {
                certrot_p11_find_keys(
                    module.handle, session, klass, uri.object, nil, 0, &handles, UInt(handles.count), &count)
            }
        guard rv == ReturnCode.ok else { throw failure(uri, "C_FindObjects", rv) }
        return Array(handles.prefix(Int(count)))
    }

    static func attribute(module: PKCS11Module, session: UInt, handle: UInt, type: UInt) -> [UInt8]? {
        var value = [UInt8](repeating: 0, count: 256)
        var length = value.count
        guard certrot_p11_attribute(module.handle, session, handle, type, &value, &length) == ReturnCode.ok,
            length <= value.count
        else { return nil }
        return Array(value.prefix(length))
    }

    /// CKA_EC_POINT is the DER OCTET STRING of the uncompressed point (some modules give the bare point).
    static func ecPoint(_ value: [UInt8]) -> P256.Signing.PublicKey? {
        var point = value
        if point.count == 67, point[0] == 0x04, point[1] == 0x41 { point = Array(point[2...]) }
        guard point.count == 65, point[0] == 0x04 else { return nil }
        return try? P256.Signing.PublicKey(x963Representation: point)
    }

    /// Makes a P-256 key pair inside the token under the URI's `object` label (and `id`, or 8 random bytes),
    /// refusing when a private key of that label or id is already there; then opens it.
    public static func generate(uri: PKCS11URI, pin: [UInt8]) throws(CertrotError) -> TokenKey {
        guard let label = uri.object else {
            throw CertrotError(.invalidConfig, "\(uri): generating a key needs object= (its label)")
        }
        let module = try PKCS11Module.shared(uri.modulePath)
        try module.read { _ throws(CertrotError) in try generatePair(module: module, uri: uri, label: label, pin: pin) }
        return try open(uri: uri, pin: pin, sessions: 1)
    }

    private static func generatePair(
        module: PKCS11Module, uri: PKCS11URI, label: String, pin: [UInt8]
    ) throws(CertrotError) {
        let session = try openSession(module: module, uri: uri, pin: pin)
        defer { _ = certrot_p11_close_session(module.handle, session.session) }
        var byLabel = uri
        byLabel.id = nil
        let sameLabel = try objects(module: module, session: session.session, uri: byLabel, class: 3, id: nil)
        var byID = uri
        byID.object = nil
        let sameID = try uri.id.map { id throws(CertrotError) in
            try objects(module: module, session: session.session, uri: byID, class: 3, id: id)
        }
        if !sameLabel.isEmpty || !(sameID ?? []).isEmpty {
            throw CertrotError(
                .invalidKey, "\(uri): the token already holds a private key '\(label)'; refusing to add another")
        }
        let id = uri.id ?? (0..<8).map { _ in UInt8.random(in: 0...255) }
        var publicHandle: UInt = 0
        var privateHandle: UInt = 0
        let rv = certrot_p11_generate_p256(
            module.handle, session.session, label, id, id.count, &publicHandle, &privateHandle)
        guard rv == ReturnCode.ok else { throw failure(uri, "C_GenerateKeyPair", rv) }
    }
}
