// swift-tools-version:6.1
import PackageDescription

// libFuzzer harnesses for certrot's parsers of untrusted input. Kept out of the main package so that
// `swift build` / `swift test` never see them; built and run by scripts/fuzz (see docs/architecture.md, "Fuzzing").
// Each target is a libFuzzer binary: it exports LLVMFuzzerTestOneInput and libFuzzer supplies main.

let fuzzTargets = [
    "fuzz-inventory", "fuzz-ack", "fuzz-bundle-part", "fuzz-part-assembler", "fuzz-pem", "fuzz-jws",
    "fuzz-base64url", "fuzz-bundle-check", "fuzz-cose",
]

let package = Package(
    name: "certrot-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "certrot", path: "..")],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [.product(name: "CertrotCore", package: "certrot")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
        + fuzzTargets.map { name in
            .executableTarget(
                name: name,
                dependencies: ["FuzzSupport", .product(name: "CertrotCore", package: "certrot")],
                path: "Sources/\(name)",
                swiftSettings: [.swiftLanguageMode(.v6), .unsafeFlags(["-parse-as-library"])]
            )
        }
)
