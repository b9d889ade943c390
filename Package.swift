// swift-tools-version:6.1
import PackageDescription

// certrot: over-the-air certificate rotation for MQTT device fleets.
// Architecture (see docs/architecture.md):
//   CertrotCore        pure domain: PEM, device IDs, inventory/ack parsing, JWS bundles, parts, rotation states
//   CMosquitto         system library: libmosquitto (the only C import)
//   CertrotMQTT        adapter: libmosquitto client (threaded mode) exposed as async Swift
//   CertrotStore       adapters: SQLite through GRDB, PostgreSQL through postgres-nio
//   CPKCS11            C bridge to a PKCS#11 module (dlopen; C_Sign, C_GenerateKeyPair, …)
//   CertrotPKCS11      keys in a PKCS#11 token: RFC 7512 URIs, session pool, reconnects
//   CertrotHTTPAPI     the HTTP API's types and server protocol, generated from docs/openapi.yaml
//   CertrotServer      the daemon: config, engine, reconciler, JSON-RPC, the HTTP API, service wiring
//   CertrotSimulator   reference device fleet (what an nRF91 application does)
//   CertrotTestSupport broker and PostgreSQL launchers, fixture certificates, EngineHarness: tests and certrot-lab
//   CertrotConsole     terminal output shared by the two executables
//   certrot            the CLI and the daemon (what ships)
//   certrot-lab        the demo and the benchmark (`make demo`, `make bench`), which start their own servers
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "certrot",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "certrot", targets: ["certrot"]),
        .executable(name: "certrot-lab", targets: ["certrot-lab"]),
        .library(name: "CertrotCore", targets: ["CertrotCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-openapi-generator.git", from: "1.14.3"),
        .package(url: "https://github.com/apple/swift-openapi-runtime.git", from: "1.13.4"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird.git", from: "2.1.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        // ECDSA public-key recovery (a modem's identity key from its attestations): P-256 point arithmetic.
        .package(url: "https://github.com/attaswift/BigInt.git", from: "6.0.1"),
    ],
    targets: [
        .target(
            name: "CertrotCore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "BigInt", package: "BigInt"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(
            name: "CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // PKCS#11 through the C API: a small C bridge (dlopen, the calls signing needs) and the Swift key over it.
        .target(name: "CPKCS11", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "CertrotPKCS11",
            dependencies: ["CPKCS11", "CertrotCore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .target(
            name: "CertrotMQTT",
            dependencies: ["CMosquitto", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "CertrotStore",
            dependencies: [
                "CertrotCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The HTTP API's types and server protocol, generated at build time from docs/openapi.yaml.
        .target(
            name: "CertrotHTTPAPI",
            dependencies: [.product(name: "OpenAPIRuntime", package: "swift-openapi-runtime")],
            swiftSettings: strict,
            plugins: [.plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator")]
        ),
        .target(
            name: "CertrotServer",
            dependencies: [
                "CertrotCore", "CertrotMQTT", "CertrotStore", "CertrotPKCS11", "CertrotHTTPAPI",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "CertrotSimulator",
            dependencies: [
                "CertrotCore", "CertrotMQTT",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "CertrotTestSupport",
            dependencies: [
                "CertrotCore", "CertrotServer", "CertrotStore", "CertrotMQTT", "CertrotSimulator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "CertrotConsole",
            dependencies: ["CertrotCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "certrot",
            dependencies: [
                "CertrotCore", "CertrotServer", "CertrotStore", "CertrotSimulator", "CertrotMQTT", "CertrotConsole",
                "CertrotPKCS11",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "certrot-lab",
            dependencies: [
                "CertrotCore", "CertrotServer", "CertrotStore", "CertrotSimulator", "CertrotTestSupport", "CertrotMQTT",
                "CertrotConsole", "CertrotPKCS11",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CertrotCoreTests",
            dependencies: [
                "CertrotCore", "CertrotTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        // The engine's decisions on EngineHarness: no broker, no sleeps.
        .testTarget(
            name: "CertrotEngineTests",
            dependencies: [
                "CertrotCore", "CertrotServer", "CertrotStore", "CertrotSimulator", "CertrotTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CertrotIntegrationTests",
            dependencies: [
                "CertrotCore", "CertrotServer", "CertrotStore", "CertrotSimulator", "CertrotTestSupport",
                "CertrotMQTT", "CertrotPKCS11",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
    ]
)
