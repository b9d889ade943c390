import CertrotSimulator
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An ``ATModem`` behind a pseudo-terminal: a host opens ``path`` as it would `/dev/ttyACM0` and talks AT to it
/// (certrot enroll, Nordic's nrfcredstore and device_credentials_installer). A command ends at a CR or LF outside
/// double quotes, so that certificate text written with `AT%CMNG=0` keeps its line breaks, as on a real modem.
/// Faults a test can ask for: drop one byte of the next long command (a UART without flow control), answer
/// nothing to commands starting with a prefix, answer a command with a given CME error.
public final class ModemPTY: @unchecked Sendable {
    public struct Faults: Sendable {
        /// Drop one byte from the middle of the next command longer than this many bytes, once.
        public var dropByteOnceAbove: Int?
        /// Commands starting with this prefix are read and never answered.
        public var silent: String?
        /// Commands starting with a key are answered `+CME ERROR: <value>` (or `ERROR` without CMEE), every time.
        public var errors: [String: Int] = [:]
        public init() {}
    }

    public let path: String
    static let getNumber: UInt = 0x8004_5430  // TIOCGPTN
    static let setLock: UInt = 0x4004_5431  // TIOCSPTLCK
    private let master: Int32
    private let slave: Int32
    private let state: Mutex<(modem: ATModem, faults: Faults, dropped: Int)>
    private var thread: Thread?
    private let stopped = Atomic<Bool>(false)

    public init(modem: ATModem, faults: Faults = Faults()) throws {
        // posix_openpt, unlockpt and ptsname as Linux implements them (Swift's Glibc module leaves them out):
        // /dev/ptmx, then TIOCSPTLCK to unlock the slave and TIOCGPTN for its number.
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard master >= 0, ioctl(master, Self.setLock, &unlock) == 0, ioctl(master, Self.getNumber, &number) == 0
        else {
            throw BrokerError(message: "cannot open a pseudo-terminal: errno \(errno)")
        }
        path = "/dev/pts/\(number)"
        // Held open by the emulator, raw, so that the host's opening and closing the port does not hang it up.
        slave = open(path, O_RDWR | O_NOCTTY)
        guard slave >= 0 else { throw BrokerError(message: "cannot open \(path): errno \(errno)") }
        var attributes = termios()
        tcgetattr(slave, &attributes)
        cfmakeraw(&attributes)
        tcsetattr(slave, TCSANOW, &attributes)
        state = Mutex((modem, faults, 0))
        let thread = Thread { [unowned self] in self.serve() }
        thread.name = "modem-pty"
        self.thread = thread
        thread.start()
    }

    deinit { stop() }

    /// The modem as it is now (its credential store, the commands it received).
    public var modem: ATModem { state.withLock { $0.modem } }
    /// How many bytes the line dropped (``Faults/dropByteOnceAbove``).
    public var droppedBytes: Int { state.withLock { $0.dropped } }

    public func setFaults(_ faults: Faults) { state.withLock { $0.faults = faults } }
    public func update(_ change: (inout ATModem) -> Void) { state.withLock { change(&$0.modem) } }

    public func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        close(slave)
        close(master)
    }

    private func serve() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var line: [UInt8] = []
        var quoted = false
        while !stopped.load(ordering: .relaxed) {
            var poll = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&poll, 1, 100) > 0 else { continue }
            let count = read(master, &buffer, buffer.count)
            if count <= 0 {
                if count < 0, errno == EIO || errno == EAGAIN || errno == EINTR {
                    usleep(10_000)
                    continue
                }
                return
            }
            for byte in buffer[0..<count] {
                if byte == UInt8(ascii: "\"") { quoted.toggle() }
                if !quoted, byte == 0x0D || byte == 0x0A || byte == 0 {
                    // An empty or blank command gets no answer, as at_host drops it.
                    if line.contains(where: { $0 != 0x20 && $0 != 0x09 }) { answer(line) }
                    line = []
                    quoted = false
                } else {
                    line.append(byte)
                }
            }
        }
    }

    private func answer(_ raw: [UInt8]) {
        let reply: String? = state.withLock { state in
            var bytes = raw
            if let above = state.faults.dropByteOnceAbove, bytes.count > above {
                bytes.remove(at: bytes.count / 2)
                state.faults.dropByteOnceAbove = nil
                state.dropped += 1
            }
            let line = String(decoding: bytes, as: UTF8.self)
            if let silent = state.faults.silent, line.uppercased().hasPrefix(silent.uppercased()) {
                state.modem.record(line)
                return nil
            }
            for (prefix, code) in state.faults.errors where line.uppercased().hasPrefix(prefix.uppercased()) {
                return state.modem.cmee ? "+CME ERROR: \(code)\r\n" : "ERROR\r\n"
            }
            return state.modem.handle(line)
        }
        guard let reply else { return }
        let bytes = Array(reply.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBufferPointer { write(master, $0.baseAddress, $0.count) }
            if written <= 0 { return }
            offset += written
        }
    }
}
