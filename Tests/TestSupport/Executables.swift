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
    public static func waitForPcscd(reader: String, present: Bool, timeout: TimeInterval = 5, resetting: Bool = true) throws {
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
}
