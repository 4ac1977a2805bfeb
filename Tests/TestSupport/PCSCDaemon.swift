import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The machine's one pcscd: tests start it when it is not running (CI containers have no systemd).
public enum PCSCDaemon {
    public static let socketPath = "/run/pcscd/pcscd.comm"

    /// Whether a live pcscd runs (a killed one can linger as a zombie when PID 1 does not reap: that one is dead).
    public static var isRunning: Bool { !livePIDs.isEmpty }

    static var livePIDs: [Int32] {
        run("/usr/bin/pgrep", ["-x", "pcscd"]).stdout.split(separator: "\n").compactMap { Int32($0) }.filter { pid in
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            return !status.contains("State:\tZ")
        }
    }

    /// Starts `pcscd -f` detached unless one runs, and waits for its socket. Throws when it cannot.
    public static func ensureRunning() throws {
        if isRunning && FileManager.default.fileExists(atPath: socketPath) { return }
        if !isRunning { try start() }
        try waitForSocket()
    }

    /// Starts a detached `pcscd -f` (its output to /tmp/pcscd-tests.log).
    public static func start() throws {
        // A killed pcscd leaves its pid file and socket behind, and a new one refuses to start while the pid names
        // a process (even a zombie): remove them when no live pcscd exists.
        if !isRunning {
            try? FileManager.default.removeItem(atPath: "/run/pcscd/pcscd.pid")
            try? FileManager.default.removeItem(atPath: socketPath)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        // env --default-signal: the test process ignores some signals, and ignored signals survive exec.
        process.arguments = ["/usr/bin/env", "--default-signal", "/usr/sbin/pcscd", "-f"]
        _ = FileManager.default.createFile(atPath: "/tmp/pcscd-tests.log", contents: nil)
        let log = FileHandle(forWritingAtPath: "/tmp/pcscd-tests.log")
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw TestSetupError("cannot start pcscd (\(error)): install it with scripts/bootstrap")
        }
    }

    /// Kills pcscd the hard way (SIGKILL, as a crash would) and waits until it is gone.
    public static func kill() {
        for pid in livePIDs { Glibc.kill(pid, SIGKILL) }
        for _ in 0..<100 where isRunning { Thread.sleep(forTimeInterval: 0.05) }
    }

    static func waitForSocket() throws {
        for _ in 0..<100 {
            if FileManager.default.fileExists(atPath: socketPath) {
                Thread.sleep(forTimeInterval: 0.2)  // let it load the vpcd driver
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSetupError("pcscd did not create \(socketPath) within 5 s: see /tmp/pcscd-tests.log")
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a program to completion and returns its status and output.
@discardableResult
public func run(_ executable: String, _ arguments: [String], stdin: String? = nil, timeout: TimeInterval = 60) -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    do { try process.run() } catch { return (127, "", "\(error)") }
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    // Read both pipes concurrently so a chatty child cannot block on a full pipe.
    let group = DispatchGroup()
    nonisolated(unsafe) var stdoutData = Data(), stderrData = Data()
    group.enter()
    DispatchQueue.global().async { stdoutData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.enter()
    DispatchQueue.global().async { stderrData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    group.wait()
    return (process.terminationStatus, String(decoding: stdoutData, as: UTF8.self), String(decoding: stderrData, as: UTF8.self))
}
