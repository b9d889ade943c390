import Foundation

/// HTTP over a plain loopback TCP socket, for tests that must send bytes exactly as written: a path an HTTP client
/// would normalise (`//api/v1/fleet`), or a request head that announces a body it never sends.
public enum RawHTTP {
    public struct Reply: Sendable {
        /// The status code, 0 when no status line arrived before the timeout or the close.
        public var status: Int
        public var head: String
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Sends `request` to 127.0.0.1:`port` and reads one response: its head, then `Content-Length` bytes of body
    /// (or up to the close). Never waits longer than `timeout` seconds for a read.
    public static func exchange(port: Int32, _ request: [UInt8], timeout: Double = 15) throws -> Reply {
        let fd = try connected(port: port, timeout: timeout)
        defer { close(fd) }
        try send(fd, request)
        return read(fd)
    }

    /// A request head and body as bytes: `method path HTTP/1.1`, `Host`, the headers given, then `body`.
    public static func request(
        _ method: String, _ path: String, host: String = "127.0.0.1", headers: [(String, String)] = [],
        body: [UInt8] = []
    ) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        return Array((head + "\r\n").utf8) + body
    }

    /// A TCP socket connected to 127.0.0.1:`port`; nil when nothing accepts there.
    public static func connectLoopback(port: Int32) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// A connected socket to 127.0.0.1:`port`, with `timeout` on every read.
    public static func connected(port: Int32, timeout: Double) throws -> Int32 {
        guard let fd = connectLoopback(port: port) else {
            throw BrokerError(message: "connect to 127.0.0.1:\(port) failed")
        }
        var interval = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    public static func send(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw BrokerError(message: "send failed after \(sent) of \(bytes.count) bytes") }
            sent += n
        }
    }

    /// Reads one response from `fd`.
    public static func read(_ fd: Int32) -> Reply {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        while true {
            if let end = received.firstRange(of: separator) {
                let head = String(decoding: received[..<end.lowerBound], as: UTF8.self)
                let length = head.split(separator: "\r\n").lazy.compactMap { line -> Int? in
                    let parts = line.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                    return Int(parts[1].trimmingCharacters(in: .whitespaces))
                }.first
                let body = Array(received[end.upperBound...])
                if let length, body.count >= length {
                    return reply(head, Array(body.prefix(length)))
                }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            received += chunk[..<n]
        }
        guard let end = received.firstRange(of: separator) else {
            return Reply(status: 0, head: String(decoding: received, as: UTF8.self), body: [])
        }
        return reply(String(decoding: received[..<end.lowerBound], as: UTF8.self), Array(received[end.upperBound...]))
    }

    static func reply(_ head: String, _ body: [UInt8]) -> Reply {
        let status = head.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        return Reply(status: status, head: head, body: body)
    }
}
