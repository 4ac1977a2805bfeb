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

    /// Waits until pcscd reports a card present and powered (or absent) on `reader`, asking through pyscard's
    /// SCardGetStatusChange. Never a connect: pyscard's disconnect resets the card, and a program already holding it
    /// (cardd) then gets SCARD_W_RESET_CARD in the middle of its operation.
    public static func waitForPcscd(reader: String, present: Bool, timeout: TimeInterval = 5) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let result = run("/usr/bin/python3", ["-c", """
                from smartcard.scard import *
                hr, context = SCardEstablishContext(SCARD_SCOPE_USER)
                hr, states = SCardGetStatusChange(context, 0, [("\(reader)", SCARD_STATE_UNAWARE)])
                state, atr = states[0][1], states[0][2]
                ready = hr == SCARD_S_SUCCESS and state & SCARD_STATE_PRESENT and not state & SCARD_STATE_MUTE and len(atr) > 0
                print("present" if ready else "absent")
                SCardReleaseContext(context)
                """])
            if result.stdout.contains(present ? "present" : "absent") { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestSetupError("pcscd did not see the card \(present ? "arrive on" : "leave") \(reader) within \(Int(timeout)) s")
    }
}
