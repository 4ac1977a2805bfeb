import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One state change told to the service manager (sd_notify(3) names).
public enum NotifyMessage: Sendable, Hashable {
    /// `READY=1`: start-up finished (a `Type=notify` unit is "active" from now on).
    case ready
    /// `STATUS=...`: a one-line status for `systemctl status` (newlines are replaced by spaces).
    case status(String)
    /// `WATCHDOG=1`: the keep-alive ping, due every `SystemdNotifier.watchdogInterval`.
    case watchdog
    /// `STOPPING=1`: shutdown began.
    case stopping
    /// `RELOADING=1`, with `MONOTONIC_USEC=` (required by `Type=notify-reload`, systemd 253+) when given.
    case reloading(monotonicMicroseconds: UInt64?)
    /// `MAINPID=...`: the service's main process is another one.
    case mainPID(Int32)

    /// The `KEY=VALUE` line(s) of this message.
    public var line: String {
        switch self {
        case .ready: "READY=1"
        case .status(let text): "STATUS=" + text.map { $0.isNewline ? " " : String($0) }.joined()
        case .watchdog: "WATCHDOG=1"
        case .stopping: "STOPPING=1"
        case .reloading(let usec): usec.map { "RELOADING=1\nMONOTONIC_USEC=\($0)" } ?? "RELOADING=1"
        case .mainPID(let pid): "MAINPID=\(pid)"
        }
    }
}

/// The sd_notify protocol without libsystemd: each `notify` sends one datagram to the AF_UNIX socket named in
/// `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), as systemd's notify-selfcontained-example.c does.
///
/// The environment is injected (defaults to the process's), so tests and a supervisor-less run need no global state.
/// Without `NOTIFY_SOCKET` (run by hand, in a container, under `Type=simple`) every call is a no-op returning false.
/// Sending never blocks (`MSG_DONTWAIT`): it may be called from async code.
public struct SystemdNotifier: Sendable {
    /// The socket address from `NOTIFY_SOCKET`, or nil when not run under a service manager that listens.
    public let socketPath: String?
    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (as sd_watchdog_enabled(3) advises), or nil when the
    /// unit has no `WatchdogSec=` or `WATCHDOG_PID` names another process.
    public let watchdogInterval: Duration?
    /// The watchdog timeout itself (`WATCHDOG_USEC`), when the watchdog is on for this process.
    public let watchdogTimeout: Duration?

    /// - Parameters:
    ///   - environment: where `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are read.
    ///   - processID: this process's id, compared with `WATCHDOG_PID`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment, processID: Int32 = getpid()) {
        let socket = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = socket
        watchdogTimeout = Self.watchdogTimeout(environment: environment, processID: processID)
        watchdogInterval = watchdogTimeout.map { $0 / 2 }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` set).
    public var isEnabled: Bool { socketPath != nil }

    /// `WATCHDOG_USEC` as sd_watchdog_enabled(3) reads it: a positive integer; with `WATCHDOG_PID` set, only for
    /// that process. Anything else (absent, zero, not a number) means no watchdog.
    static func watchdogTimeout(environment: [String: String], processID: Int32) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pidText = environment["WATCHDOG_PID"] {
            guard let pid = Int32(pidText), pid == processID else { return nil }
        }
        return .microseconds(Int64(clamping: usec))
    }

    /// Sends the messages in one datagram. Returns false (and sends nothing) when `NOTIFY_SOCKET` is unset.
    /// - Throws: `NotifyError` when the address is unusable or the datagram cannot be sent.
    @discardableResult
    public func notify(_ messages: NotifyMessage...) throws(NotifyError) -> Bool {
        try notify(messages)
    }

    /// Sends the messages in one datagram (see the variadic form).
    @discardableResult
    public func notify(_ messages: [NotifyMessage]) throws(NotifyError) -> Bool {
        guard let socketPath else { return false }
        try Self.send(messages.map(\.line).joined(separator: "\n"), to: socketPath)
        return true
    }

    /// One datagram to `path` ('@' = abstract namespace: the '@' becomes a NUL, and the address length counts the
    /// name only, no trailing NUL, as the kernel compares the whole length).
    static func send(_ text: String, to path: String) throws(NotifyError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var name = Array(path.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.first == "/" || abstract, name.count >= 2, name.count < capacity else {
            throw NotifyError(.badAddress, "NOTIFY_SOCKET=\(path) is not an absolute path or an @abstract name of at most \(capacity - 1) bytes: the service manager set an address this code cannot use")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in name.enumerated() { raw[i] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + name.count + (abstract ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw NotifyError(.sendFailed, "socket(AF_UNIX, SOCK_DGRAM) failed: \(String(cString: strerror(errno))); check RestrictAddressFamilies= allows AF_UNIX")
        }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        while true {
            let sent = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), socketAddress, length) }
                }
            }
            if sent >= 0 { return }
            if errno == EINTR { continue }
            throw NotifyError(.sendFailed, "sending \(text.split(separator: "\n").first ?? "") to NOTIFY_SOCKET=\(path) failed: \(String(cString: strerror(errno))); is the service manager's notify socket reachable (NotifyAccess=, mount namespace)?")
        }
    }
}

/// A failed sd_notify.
public struct NotifyError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// `NOTIFY_SOCKET` holds no usable AF_UNIX address.
        case badAddress = "notify-bad-address"
        /// socket(2) or sendto(2) failed.
        case sendFailed = "notify-send-failed"
    }

    public let code: Code
    /// One line: what failed, why, what to do.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
