import CertrotCore
import Crypto
import Foundation
import Hummingbird
import OpenAPIRuntime

/// An HTTP API token as configured (`http.tokens`): its name, recorded as the operator of what it does, and the
/// SHA-256 of the token (the token itself is never stored).
package struct APIToken: Sendable, Equatable {
    package var name: String
    package var sha256: [UInt8]

    package init(name: String, sha256: [UInt8]) {
        self.name = name
        self.sha256 = sha256
    }

    /// The name of the token the current request presented (nil: none), for the API's handlers.
    @TaskLocal package static var caller: String?
}

/// Who may call the HTTP API (docs/operations.md, "HTTP API"): read-only requests (GET, HEAD) are open when the
/// listener is on a loopback address and need a token otherwise; every other method always needs one. The token goes
/// in `Authorization: Bearer …`, never a cookie, so a page on another site cannot make a browser send it (no CSRF).
/// A token that matches none configured is refused even where none is needed.
///
/// It is the middleware of the router group that holds the API's operations, so it runs for every request the
/// router routes to one of them, however its path is spelled; it never looks at the path itself.
struct APIAuthentication<Context: RequestContext>: RouterMiddleware {
    let tokens: [APIToken]
    let readsOpen: Bool

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var caller: String?
        if let header = request.headers[.authorization] {
            guard let presented = Self.bearer(header) else {
                return Self.refusal("Authorization must be 'Bearer <token>'")
            }
            guard let token = match(presented) else { return Self.refusal("the token is not one of http.tokens") }
            caller = token.name
        }
        let reads = request.method == .get || request.method == .head
        if caller == nil, !(reads && readsOpen) {
            return Self.refusal(
                reads
                    ? "this listener is not on loopback: every request needs a token (Authorization: Bearer …)"
                    : "\(request.method) needs a token (Authorization: Bearer …)")
        }
        return try await APIToken.$caller.withValue(caller) { try await next(request, context) }
    }

    /// The configured token whose digest is SHA-256(`presented`), compared in constant time over all of them.
    func match(_ presented: String) -> APIToken? {
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var found: APIToken?
        for token in tokens {
            var difference: UInt8 = token.sha256.count == digest.count ? 0 : 1
            for (a, b) in zip(token.sha256, digest) { difference |= a ^ b }
            if difference == 0 { found = token }
        }
        return found
    }

    static func bearer(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    static func refusal(_ message: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.wwwAuthenticate] = #"Bearer realm="certrot""#
        return Response(
            status: .unauthorized, headers: headers,
            body: .init(
                byteBuffer: ByteBuffer(bytes: HTTPProblem.json(code: RPCError.Code.unauthorized.rawValue, message))))
    }
}

/// Refuses a request body over `maxBytes` with 413 before the handler reads it: by its `Content-Length` without
/// reading a byte, and a body of unknown length by counting while it is collected. Runs after
/// ``APIAuthentication``, so an unauthenticated request is refused before its body is read at all.
struct BodyLimit<Context: RequestContext>: RouterMiddleware {
    let maxBytes: Int

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if let length = request.headers[.contentLength], let bytes = Int(length), bytes > maxBytes {
            return Self.tooLarge(maxBytes)
        }
        var request = request
        do {
            _ = try await request.collectBody(upTo: maxBytes)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            return Self.tooLarge(maxBytes)
        }
        return try await next(request, context)
    }

    static func tooLarge(_ maxBytes: Int) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.connection] = "close"
        return Response(
            status: .contentTooLarge, headers: headers,
            body: .init(
                byteBuffer: ByteBuffer(
                    bytes: HTTPProblem.json(
                        code: RPCError.Code.invalidRequest.rawValue, "the request body is over \(maxBytes) bytes"))))
    }
}

/// `X-Content-Type-Options: nosniff` on every response: a browser never runs a JSON or text answer as a script or
/// page of another type (red-team #32, finding 9).
struct NoSniff<Context: RequestContext>: RouterMiddleware {
    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.xContentTypeOptions] = "nosniff"
        return response
    }
}

/// The error body of the HTTP API (`Problem` in docs/openapi.yaml): the JSON-RPC error's code, message and data.
enum HTTPProblem {
    static func json(code: Int, _ message: String, data: Data? = nil) -> [UInt8] {
        var object: [String: Any] = ["code": code, "message": withoutSourceLocations(message)]
        if let data, let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) {
            object["data"] = value
        }
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    /// `message` without the source locations some libraries' errors carry (`SwiftASN1/ASN1.swift:188`): they tell
    /// a caller how the daemon is built, and nothing about the request (red-team #32, finding 9).
    static func withoutSourceLocations(_ message: String) -> String {
        message.replacing(/\s*\(?[\w.\/-]+\.swift:\d+\)?/, with: "")
    }

    /// The status for a JSON-RPC error code (docs/openapi.yaml, "Errors").
    static func status(code: Int) -> Int {
        switch RPCError.Code(rawValue: code) {
        case .parse, .invalidRequest, .invalidParams: 400
        case .unknownDevice, .unknownCampaign, .methodNotFound: 404
        case .unauthorized: 401
        case .campaignRefused: 422
        case .campaignState: 409
        case .unavailable: 503
        case .internalError, nil: 500
        }
    }
}

/// Errors of the generated layer as `Problem` bodies (docs/openapi.yaml): a request the document does not allow —
/// a body that does not decode, a missing or malformed parameter — is 400 with `-32602`, not the runtime's bare 500.
/// An empty request body counts as none.
struct APIErrors: ServerMiddleware {
    func intercept(
        _ request: HTTPTypes.HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next:
            @Sendable (HTTPTypes.HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (
                HTTPTypes.HTTPResponse, HTTPBody?
            )
    ) async throws -> (HTTPTypes.HTTPResponse, HTTPBody?) {
        // An empty body is no body (a POST without one: the transport hands an empty body over, which the generated
        // code would try to read as JSON).
        let body = body.flatMap { $0.length == .known(0) ? nil : $0 }
        do {
            return try await next(request, body, metadata)
        } catch let error as ServerError {
            let invalid = error.underlyingError is DecodingError || error.httpStatus.kind == .clientError
            let status: HTTPTypes.HTTPResponse.Status = invalid ? .badRequest : error.httpStatus
            let code = invalid ? RPCError.Code.invalidParams.rawValue : RPCError.Code.internalError.rawValue
            let message =
                invalid
                ? "the request does not match docs/openapi.yaml: \(String(describing: error.underlyingError).prefix(300))"
                : "internal error; see the daemon log"
            return (
                HTTPTypes.HTTPResponse(status: status, headerFields: [.contentType: "application/json"]),
                HTTPBody(HTTPProblem.json(code: code, message))
            )
        }
    }
}
