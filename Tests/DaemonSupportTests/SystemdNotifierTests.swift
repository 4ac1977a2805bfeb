import Foundation
import Testing
@testable import DaemonSupport
#if canImport(Glibc)
import Glibc
#endif

/// A real AF_UNIX datagram socket standing in for systemd's notify socket.
final class DatagramListener: Sendable {
    let fd: Int32
    /// The NOTIFY_SOCKET value: a path, or "@name" for the abstract namespace.
    let address: String
    private let path: String?

    init(abstract: Bool) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let name = "onecard-notify-test-\(UUID().uuidString.prefix(8))"
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes: [UInt8]
        if abstract {
            bytes = [0] + Array(name.utf8)
            self.address = "@" + name
            path = nil
        } else {
            let file = NSTemporaryDirectory() + name + ".sock"
            bytes = Array(file.utf8)
            self.address = file
            path = file
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        // The abstract name's length is exact (no NUL terminator): the sender must use the same length.
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    deinit {
        close(fd)
        if let path { unlink(path) }
    }

    /// The next datagram, or nil if none arrives within `milliseconds`.
    func receive(milliseconds: Int32 = 2000) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, milliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }
}

@Suite struct SystemdNotifierTests {
    @Test(arguments: [false, true])
    func messagesArriveAsDatagrams(abstract: Bool) throws {
        let listener = try DatagramListener(abstract: abstract)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": listener.address])
        #expect(notifier.isEnabled)

        #expect(try notifier.notify(.ready, .status("serving\nreader ACR122U")))
        #expect(listener.receive() == "READY=1\nSTATUS=serving reader ACR122U")
        try notifier.notify(.watchdog)
        #expect(listener.receive() == "WATCHDOG=1")
        try notifier.notify(.reloading(monotonicMicroseconds: 1234))
        #expect(listener.receive() == "RELOADING=1\nMONOTONIC_USEC=1234")
        try notifier.notify(.reloading(monotonicMicroseconds: nil))
        #expect(listener.receive() == "RELOADING=1")
        try notifier.notify(.stopping)
        #expect(listener.receive() == "STOPPING=1")
        try notifier.notify(.mainPID(4242))
        #expect(listener.receive() == "MAINPID=4242")
        #expect(listener.receive(milliseconds: 50) == nil)
    }

    @Test func noSocketMeansNoOp() throws {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        #expect(try notifier.notify(.ready) == false)
        #expect(try SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]).notify(.ready) == false)
    }

    @Test func unusableAddressesAreTypedErrors() {
        for address in ["relative/path", "@", String(repeating: "/x", count: 60)] {
            #expect(throws: NotifyError.self) { try SystemdNotifier(environment: ["NOTIFY_SOCKET": address]).notify(.ready) }
        }
        // A path where nobody listens: sendto fails (ENOENT), reported, not crashed.
        let missing = NSTemporaryDirectory() + "onecard-no-listener-\(UUID().uuidString.prefix(8)).sock"
        do {
            try SystemdNotifier(environment: ["NOTIFY_SOCKET": missing]).notify(.ready)
            Issue.record("sending to a missing socket succeeded")
        } catch {
            #expect(error.code == .sendFailed)
            #expect(error.message.contains(missing))
        }
    }

    @Test func watchdogIntervalIsHalfTheTimeout() {
        let on = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000"], processID: 77)
        #expect(on.watchdogTimeout == .seconds(30))
        #expect(on.watchdogInterval == .seconds(15))
        let forUs = SystemdNotifier(environment: ["WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "77"], processID: 77)
        #expect(forUs.watchdogInterval == .milliseconds(2500))
    }

    @Test(arguments: [
        [:],
        ["WATCHDOG_USEC": "0"],
        ["WATCHDOG_USEC": "-5"],
        ["WATCHDOG_USEC": "soon"],
        ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "78"],
        ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"],
    ])
    func noWatchdog(environment: [String: String]) {
        let notifier = SystemdNotifier(environment: environment, processID: 77)
        #expect(notifier.watchdogInterval == nil)
        #expect(notifier.watchdogTimeout == nil)
    }

    @Test func theDefaultEnvironmentIsTheProcesss() {
        // The test runner is not a systemd service with a watchdog for this pid.
        let notifier = SystemdNotifier()
        #expect(notifier.socketPath == ProcessInfo.processInfo.environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 })
    }
}
