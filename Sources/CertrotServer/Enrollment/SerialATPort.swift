import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A modem's AT interface on a serial port (`/dev/ttyACM0`, a USB-UART adapter, a pseudo-terminal): raw 8N1 at
/// the given baud rate, RTS/CTS flow control when asked for (a UART without it drops bytes of long commands; see
/// docs/factory.md). A command is sent with CR LF; the answer is read line by line until `OK`, `ERROR` or
/// `+CME ERROR: <n>`, skipping blank lines and the command's echo.
package final class SerialATPort: ATChannel {
    let fd: Int32
    let path: String
    private var pending: [UInt8] = []

    package static let baudRates: [Int: speed_t] = [
        9600: speed_t(B9600), 19200: speed_t(B19200), 38400: speed_t(B38400), 57600: speed_t(B57600),
        115200: speed_t(B115200), 230400: speed_t(B230400), 460800: speed_t(B460800),
        921600: speed_t(B921600), 1_000_000: speed_t(B1000000),
    ]

    package init(path: String, baud: Int = 115200, flowControl: Bool = true) throws {
        guard let speed = Self.baudRates[baud] else {
            throw EnrollmentError("baud rate \(baud) is not one of \(Self.baudRates.keys.sorted())")
        }
        fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            throw EnrollmentError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        self.path = path
        var attributes = termios()
        guard tcgetattr(fd, &attributes) == 0 else {
            close(fd)
            throw EnrollmentError("\(path) is not a serial port: \(String(cString: strerror(errno)))")
        }
        cfmakeraw(&attributes)
        cfsetispeed(&attributes, speed)
        cfsetospeed(&attributes, speed)
        attributes.c_cflag |= tcflag_t(CLOCAL | CREAD)
        if flowControl { attributes.c_cflag |= tcflag_t(CRTSCTS) } else { attributes.c_cflag &= ~tcflag_t(CRTSCTS) }
        tcsetattr(fd, TCSANOW, &attributes)
        tcflush(fd, TCIOFLUSH)
    }

    deinit { close(fd) }

    package func send(_ command: String, timeout: Double) throws -> ATAnswer {
        // What came in between commands (unsolicited result codes, a late answer) is not this command's.
        drain()
        let bytes = Array((command + "\r\n").utf8)
        var offset = 0
        let deadline = Date().addingTimeInterval(timeout)
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) }
            if written > 0 {
                offset += written
            } else if errno == EAGAIN || errno == EINTR {
                guard Date() < deadline else { throw EnrollmentError("the port took no more bytes", command: command) }
                var poll = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = Glibc.poll(&poll, 1, 100)
            } else {
                throw EnrollmentError(
                    "writing to \(path) failed: \(String(cString: strerror(errno)))", command: command)
            }
        }
        let echo = command.trimmingCharacters(in: .whitespaces)
        var lines: [String] = []
        while true {
            guard let line = try readLine(until: deadline) else {
                throw EnrollmentError("no answer within \(Int(timeout)) s", command: command)
            }
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || (lines.isEmpty && trimmed == echo) { continue }
            if trimmed == "OK" { return ATAnswer(lines: lines, final: .ok) }
            if trimmed == "ERROR" { return ATAnswer(lines: lines, final: .error) }
            if trimmed.hasPrefix("+CME ERROR") {
                let code = Int(trimmed.drop { !$0.isNumber }.prefix { $0.isNumber }) ?? 0
                return ATAnswer(lines: lines, final: .cme(code))
            }
            lines.append(trimmed)
        }
    }

    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 1024)
        while read(fd, &buffer, buffer.count) > 0 {}
        pending = []
    }

    /// The next line (up to LF), or nil at the deadline.
    private func readLine(until deadline: Date) throws -> String? {
        var buffer = [UInt8](repeating: 0, count: 1024)
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = Array(pending[..<newline])
                pending.removeSubrange(...newline)
                return String(decoding: line, as: UTF8.self)
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&poll, 1, Int32(min(left, 0.2) * 1000) + 1) > 0 else { continue }
            let count = read(fd, &buffer, buffer.count)
            if count > 0 {
                pending += buffer[0..<count]
            } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                throw EnrollmentError("the port \(path) closed: \(String(cString: strerror(errno)))")
            }
        }
    }
}
