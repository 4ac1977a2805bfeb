import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failure of the control socket (setting it up, or a client reaching it).
public struct ControlSocketError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The socket path does not fit in `sockaddr_un` (107 bytes).
        case pathTooLong = "socket-path-too-long"
        /// Another process answers on the socket path: a second daemon is running.
        case inUse = "socket-in-use"
        /// Something that is not a socket is in the way at the path: it is left alone.
        case notASocket = "not-a-socket"
        /// The group named for the socket does not exist.
        case unknownGroup = "unknown-group"
        /// A system call failed (its name and errno are in the message).
        case systemCall = "system-call"
        /// Nothing listens at the path (no daemon running).
        case notRunning = "not-running"
        /// The peer did not answer in time.
        case timedOut = "timed-out"
        /// The peer sent something that is not a line of the protocol.
        case protocolError = "protocol"
    }

    public let code: Code
    /// One line: what failed, why, what to do.
    public let message: String
    /// The errno, for `.systemCall`, `.notRunning`.
    public let errno: Int32?

    init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

extension ControlSocketError.Code {
    /// `catch ControlSocketError.Code.notRunning { ... }`.
    public static func ~= (code: Self, error: any Error) -> Bool { (error as? ControlSocketError)?.code == code }
}

/// Socket helpers shared by the server and the client: the one place that fills a `sockaddr_un` and classifies errno.
enum UnixSocket {
    static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// Calls `body` with the address of `path` (a filesystem path; no abstract names here).
    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws(ControlSocketError) -> R {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathLength else {
            throw ControlSocketError(.pathTooLong, "the socket path \(path) is \(bytes.count) bytes, more than \(maximumPathLength): choose a shorter path")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// A new AF_UNIX stream socket, close-on-exec.
    static func stream() throws(ControlSocketError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket(AF_UNIX, SOCK_STREAM)", "check RestrictAddressFamilies= allows AF_UNIX") }
        return fd
    }

    /// Connects `fd` to `path`, retrying EINTR.
    static func connect(_ fd: Int32, to path: String) throws(ControlSocketError) {
        while true {
            let result = try withAddress(path) { Glibc.connect(fd, $0, $1) }
            if result == 0 { return }
            if errno == EINTR { continue }
            let code = errno
            if code == ENOENT || code == ECONNREFUSED {
                throw ControlSocketError(.notRunning, "nothing answers at \(path): \(String(cString: strerror(code))); is cardd running (systemctl status cardd)?", errno: code)
            }
            if code == EACCES {
                throw ControlSocketError(.systemCall, "connect(\(path)) failed: permission denied; run as root or as a member of the socket's group", errno: code)
            }
            throw failure("connect(\(path))", "check the path", errno: code)
        }
    }

    /// Whether a process accepts connections at `path` now (a live socket) rather than a file left by a dead one.
    static func isAnswering(_ path: String) -> Bool {
        guard let fd = try? stream() else { return false }
        defer { close(fd) }
        return (try? connect(fd, to: path)) != nil
    }

    /// Writes as much of `bytes` as the socket takes now without blocking; returns the count, or nil when the peer
    /// is gone (EPIPE, ECONNRESET) or another error ends the connection.
    static func sendAvailable(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Int? {
        while true {
            let count = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if count >= 0 { return count }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
            return nil
        }
    }

    /// poll(2) with EINTR retried (the timeout restarts: callers recompute deadlines on every pass anyway).
    static func poll(_ fds: inout [pollfd], timeout: Duration?) -> Int32 {
        let wait = timeout.map { Int32(clamping: max(0, milliseconds(of: $0))) } ?? -1
        while true {
            let ready = Glibc.poll(&fds, nfds_t(fds.count), wait)
            if ready >= 0 || errno != EINTR { return ready }
        }
    }

    /// A duration in whole milliseconds, rounded up (so a wait never ends just before its deadline).
    static func milliseconds(of duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }

    static func failure(_ call: String, _ advice: String, errno code: Int32 = errno) -> ControlSocketError {
        ControlSocketError(.systemCall, "\(call) failed: \(String(cString: strerror(code))); \(advice)", errno: code)
    }
}

/// A pipe used to wake a thread blocked in poll(2): `signal()` makes the read end readable.
final class WakePipe: @unchecked Sendable {
    let readEnd: Int32
    let writeEnd: Int32

    init() throws(ControlSocketError) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            throw UnixSocket.failure("pipe", "the process may be out of file descriptors (LimitNOFILE=)")
        }
        // Glibc's module does not export pipe2: set the flags after (no exec can happen between: no fork here).
        for end in ends {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    /// Makes the read end readable (a full pipe is readable already, so EAGAIN is fine).
    func signal() {
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    /// Empties the pipe (for a wake-up that is consumed, unlike the stop signal, which stays readable).
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readEnd, &buffer, buffer.count) > 0 {}
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }
}
