import Foundation
import CardEmulator
#if canImport(Glibc)
import Glibc
#endif

/// The package's built executables, found next to the running test binary (works with any --scratch-path).
public enum BuiltExecutable {
    public static var directory: URL {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var url = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // swift test runs <bin>/OneCardPackageTests.xctest (a file on Linux); step out of a bundle directory if any.
        while url.pathExtension == "xctest" || url.lastPathComponent == "MacOS" || url.lastPathComponent == "Contents" {
            url.deleteLastPathComponent()
        }
        return url
    }

    public static func path(_ name: String) throws -> String {
        let path = directory.appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError("\(name) is not built at \(path): run `swift build` first (scripts/test does)")
        }
        return path
    }
}

/// A `cardemu` process on a vpcd port with a control socket, stopped on `terminate()` or deinit.
public final class EmulatorProcess: @unchecked Sendable {
    public let controlPath: String
    public let port: UInt16
    public let readerName: String
    let process = Process()
    let directory: URL

    /// Starts `cardemu --port PORT --card FILE --control SOCKET [extra]` and waits until pcscd sees the card.
    public init(port: UInt16 = 35963, card: String?, arguments extra: [String] = []) throws {
        try PCSCDaemon.ensureRunning()
        self.port = port
        readerName = VPCDLink.readerName(port: port)
        directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("cardemu-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        controlPath = directory.appendingPathComponent("ctl.sock").path
        try Self.waitForPcscd(reader: readerName, present: false)
        process.executableURL = URL(fileURLWithPath: try BuiltExecutable.path("cardemu"))
        process.arguments = ["--port", String(port), "--control", controlPath] + (card.map { ["--card", $0] } ?? []) + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: controlPath) { Thread.sleep(forTimeInterval: 0.05) }
        if card != nil { try Self.waitForPcscd(reader: readerName, present: true) }
    }

    deinit { terminate() }

    /// Sends a control request (`cardemu ctl`) and returns its status and output.
    @discardableResult
    public func ctl(_ arguments: String...) throws -> (status: Int32, stdout: String, stderr: String) {
        run(try BuiltExecutable.path("cardemu"), ["ctl", "--control", controlPath] + arguments)
    }

    /// Sends one request line straight to the control socket and returns the answer line: no process start, so a
    /// poll can watch a window of a few hundred milliseconds on a loaded machine (a `cardemu ctl` can take longer).
    public func request(_ line: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(controlPath.utf8.prefix($0.count - 1))) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestSetupError("cardemu's control socket \(controlPath): errno \(errno)") }
        let bytes = Array((line + "\n").utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else {
            throw TestSetupError("cardemu's control socket: short write")
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !answer.contains(0x0A) {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            answer += buffer[..<n]
        }
        return String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops the emulator (SIGTERM: it removes the card and its socket) and waits until pcscd saw the card leave.
    public func terminate() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
        try? Self.waitForPcscd(reader: readerName, present: false)
        Thread.sleep(forTimeInterval: 0.9)  // see VirtualCard.stop
        try? FileManager.default.removeItem(at: directory)
    }

    /// Waits until a card on `reader` answers a connect (or none does), through pyscard. `resetting` (the default,
    /// for set-up, when no program of ours holds the card): pyscard's high-level connection, which resets the card
    /// when it lets go (its default disposition is SCARD_UNPOWER_CARD), so the card starts powered afresh — after
    /// BacklogFaultTests' kills the next emulator's card was never seen without it. Not resetting (`card(present:)`
    /// of a running cardd): the low-level SCardConnect(SHARED) + SCardDisconnect(SCARD_LEAVE_CARD), because a reset
    /// under cardd's session made its sale fail with SCARD_W_RESET_CARD (CI, 2026-11-30).
    public static func waitForPcscd(reader: String, present: Bool, timeout: TimeInterval = 15, resetting: Bool = true) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let script = resetting ? """
                from smartcard.System import readers
                r = [x for x in readers() if str(x) == "\(reader)"][0]
                c = r.createConnection()
                try:
                    c.connect(); print("present")
                except Exception:
                    print("absent")
                """ : """
                from smartcard.scard import *
                hr, context = SCardEstablishContext(SCARD_SCOPE_USER)
                hr, card, protocol = SCardConnect(context, "\(reader)", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
                print("present" if hr == SCARD_S_SUCCESS else "absent")
                if hr == SCARD_S_SUCCESS: SCardDisconnect(card, SCARD_LEAVE_CARD)
                SCardReleaseContext(context)
                """
            let result = run("/usr/bin/python3", ["-c", script])
            if result.stdout.contains(present ? "present" : "absent") { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestSetupError("pcscd did not see the card \(present ? "arrive on" : "leave") \(reader) within \(Int(timeout)) s")
    }

    /// pcscd's event counter of `reader` (SCardGetStatusChange: the upper 16 bits of the event state), which only
    /// pcscd's event thread moves, on every arrival and removal it polls, and whether a card is present; `nil` when
    /// pcscd does not answer.
    public static func eventState(reader: String) -> (count: Int, present: Bool)? {
        let script = """
            from smartcard.scard import *
            hr, context = SCardEstablishContext(SCARD_SCOPE_USER)
            hr, states = SCardGetStatusChange(context, 0, [("\(reader)", SCARD_STATE_UNAWARE)])
            if hr == SCARD_S_SUCCESS: print(states[0][1] >> 16, 1 if states[0][1] & SCARD_STATE_PRESENT else 0)
            """
        let words = run("/usr/bin/python3", ["-c", script]).stdout.split(whereSeparator: \.isWhitespace)
        guard words.count == 2, let count = Int(words[0]) else { return nil }
        return (count, words[1] == "1")
    }

    /// Waits until pcscd's event thread has seen the card arrive on (or leave) `reader` since its event counter was
    /// `count`. Stronger than a connect that succeeds or fails: a failed power-down (a card torn away under a
    /// session) makes SCardConnect answer "no card" before the event thread polled, and a card put back before that
    /// poll is, to pcscd, the old card, whose arrival is never reported (HardwareNotes, vpcd).
    public static func waitForPcscdEvent(reader: String, present: Bool, since count: Int, timeout: TimeInterval = 15) throws {
        let script = """
            import time
            from smartcard.scard import *
            hr, context = SCardEstablishContext(SCARD_SCOPE_USER)
            deadline = time.time() + \(timeout)
            known = SCARD_STATE_UNAWARE
            while time.time() < deadline:
                hr, states = SCardGetStatusChange(context, 250, [("\(reader)", known)])
                if hr == SCARD_S_SUCCESS:
                    event = states[0][1]
                    if event >> 16 != \(count) and bool(event & SCARD_STATE_PRESENT) == \(present ? "True" : "False"):
                        print("seen"); break
                    known = event & ~SCARD_STATE_CHANGED
                elif hr != SCARD_E_TIMEOUT:
                    time.sleep(0.1)
            """
        guard run("/usr/bin/python3", ["-c", script]).stdout.contains("seen") else {
            throw TestSetupError("pcscd's event thread did not see the card \(present ? "arrive on" : "leave") \(reader) within \(Int(timeout)) s")
        }
    }
}

/// Runs a blocking call (a child process, a poll with `Thread.sleep`) on a thread of its own and awaits its result.
/// On a 2-core machine the cooperative pool has two threads: an async test that blocks one of them while a detached
/// task blocks the other starves every continuation in the process (HTTP clients, timers) until both return.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
