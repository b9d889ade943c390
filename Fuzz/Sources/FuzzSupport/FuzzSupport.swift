import CertrotCore

/// A broken invariant is a finding: print what broke and trap, so libFuzzer records a crash with the input.
public func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        print("fuzz invariant broken: \(message())")
        fatalError(message())
    }
}

/// Copies libFuzzer's input into an array (the parsers take `[UInt8]`).
public func bytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
    Array(UnsafeBufferPointer(start: data, count: size))
}

/// A fixed ES256 key (generated for fuzzing only; signs nothing real), so that harnesses can verify and sign.
public let fuzzSigningKey: SigningKey = try! SigningKey(
    pem: """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyGSyoDPeNDTRBxRU
        2gsh8cyg0ZzESOe+JruGKdRVEzGhRANCAAR/BCpAinD8lyIQ0gvCACZd3kM2oFz5
        4I2RzN6K3EpLIiyzaYzHhVY+swkqMRooELI72hIme99kplHdf0SfByxk
        -----END PRIVATE KEY-----
        """)

public let fuzzVerificationKey: VerificationKey = fuzzSigningKey.publicKey
