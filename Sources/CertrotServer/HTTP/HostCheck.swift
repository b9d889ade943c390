import Foundation
import Hummingbird

/// On a loopback listener the API's reads and the console need no token, so a page on another site could read them
/// through the operator's browser by DNS rebinding: its own name, resolved to 127.0.0.1. Such a request carries that
/// name in `Host`; it is refused (421) unless `Host` names the loopback (`localhost`, 127.0.0.0/8, `[::1]`) or the
/// listener's own host (red-team #32, finding 6). A request with no `Host` is refused too.
struct HostCheck<Context: RequestContext>: RouterMiddleware {
    /// The listener's configured host, lowercased.
    let listener: String
    /// False off loopback: there every read needs a token, and a rebinding page has none.
    let enforced: Bool

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard enforced else { return try await next(request, context) }
        guard let authority = request.head.authority, let host = Self.host(of: authority),
            host == listener || Loopback.isLiteral(host) || host == "localhost"
        else {
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; charset=utf-8"
            return Response(
                status: .misdirectedRequest, headers: headers,
                body: .init(
                    byteBuffer: ByteBuffer(
                        string: "The Host header must name this listener (localhost, 127.0.0.1 or [::1]).\n")))
        }
        return try await next(request, context)
    }

    /// The host of an authority (`name`, `name:port`, `[v6]`, `[v6]:port`), lowercased, brackets kept off.
    static func host(of authority: String) -> String? {
        let text = authority.lowercased()
        if text.hasPrefix("[") {
            guard let end = text.firstIndex(of: "]") else { return nil }
            let rest = text[text.index(after: end)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return nil }
            return String(text[text.index(after: text.startIndex)..<end])
        }
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let name = parts.first, !name.isEmpty else { return nil }
        if parts.count == 2, parts[1].isEmpty || !parts[1].allSatisfy(\.isNumber) { return nil }
        return String(name)
    }
}

/// What counts as the loopback: an address literal in 127.0.0.0/8 or ::1, or `localhost`.
package enum Loopback {
    /// `host` is an IPv4 literal in 127.0.0.0/8 or the IPv6 literal ::1 (with or without brackets).
    package static func isLiteral(_ host: String) -> Bool {
        var host = host
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { Array($0) } == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// `host` is a loopback literal or `localhost` (RFC 6761: always the loopback). Any other name counts as not
    /// loopback, whatever it resolves to now — a name merely starting with `127.` included — so reads there need a
    /// token; nothing is looked up.
    package static func contains(_ host: String) -> Bool {
        isLiteral(host) || host.lowercased() == "localhost"
    }
}
