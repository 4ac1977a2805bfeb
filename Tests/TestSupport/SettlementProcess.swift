import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A `settlementd` process on loopback for tests: SQLite in its own directory (or the PostgreSQL database given),
/// one admin key ("office"), a fixed port so that restarts keep the URL the terminals were given. `restart()`, `kill9()` and `stop()` for the fault
/// tests; `cleanUp()` stops it and removes the directory.
public final class SettlementProcess: @unchecked Sendable {
    public let work: String
    public let databasePath: String
    public let port: UInt16
    public let adminSecret: [UInt8]
    public let adminKeyFile: String
    public let logPath: String
    public private(set) var process: Process?
    public private(set) var starts = 0
    private let extraArguments: [String]
    private let postgres: String?

    public var url: String { "http://127.0.0.1:\(port)" }

    /// `postgres`: a database URL for `--postgres` instead of the SQLite file.
    public init(arguments: [String] = [], postgres: String? = nil) throws {
        work = NSTemporaryDirectory() + "settlementd-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        databasePath = work + "/settlement.sqlite"
        adminKeyFile = work + "/admin.keys"
        logPath = work + "/settlementd.log"
        adminSecret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        try ("office:" + adminSecret.map { String(format: "%02x", $0) }.joined() + "\n").write(toFile: adminKeyFile, atomically: true, encoding: .utf8)
        chmod(adminKeyFile, 0o600)
        port = try Self.freePort()
        extraArguments = arguments
        self.postgres = postgres
        try start()
    }

    deinit { cleanUp() }

    /// Starts settlementd (again) and waits until it accepts connections.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltExecutable.path("settlementd"))
        process.arguments = (postgres.map { ["--postgres", $0] } ?? ["--db", databasePath]) + ["--listen", "127.0.0.1:\(port)", "--admin-key-file", adminKeyFile] + extraArguments
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        starts += 1
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            guard process.isRunning else { throw TestSetupError("settlementd exited with \(process.terminationStatus): \(self.log)") }
            if Self.accepts(port: port) { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestSetupError("settlementd did not listen on \(port) within 30 s: \(self.log)")
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait; returns the exit status (`nil`: it did not stop in time, then it is killed).
    @discardableResult
    public func stop(timeout: TimeInterval = 20) -> Int32? {
        guard let process, process.isRunning else { return self.process?.terminationStatus }
        process.terminate()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning { kill9(); return nil }
        return process.terminationStatus
    }

    public func kill9() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public func restart(hard: Bool = false) throws {
        if hard { kill9() } else { stop() }
        try start()
    }

    public func cleanUp() {
        if stop() == nil { kill9() }
        try? FileManager.default.removeItem(atPath: work)
    }

    /// A port nobody listens on now (bound and released; loopback only).
    public static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw TestSetupError("bind: \(errno)") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    public static func accepts(port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// scripts/chaos-proxy in front of a port: cuts a share of the connections mid-request or mid-response.
public final class ChaosProxy: @unchecked Sendable {
    public let port: UInt16
    let process = Process()
    /// Its stderr goes to a file, not a pipe: processes started after it (cardd, settlementd) inherit open pipe ends
    /// from Foundation's Process, and a pipe read would wait for them all to exit.
    let reportPath = NSTemporaryDirectory() + "chaos-proxy-\(UUID().uuidString.prefix(8)).log"

    public init(target: UInt16, cutRequest: Double, cutResponse: Double, seed: Int) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/chaos-proxy").path
        port = try SettlementProcess.freePort()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--listen", "127.0.0.1:\(port)", "--target", "127.0.0.1:\(target)",
                             "--cut-request", "\(cutRequest)", "--cut-response", "\(cutResponse)", "--seed", "\(seed)"]
        process.standardOutput = FileHandle.nullDevice
        _ = FileManager.default.createFile(atPath: reportPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: reportPath))
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while !SettlementProcess.accepts(port: port) {
            guard Date() < deadline, process.isRunning else { throw TestSetupError("chaos-proxy did not start on \(port)") }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    public var url: String { "http://127.0.0.1:\(port)" }

    /// Stops the proxy; returns its "cuts request=N response=M connections=K" line.
    public func stop() -> String {
        guard process.isRunning else { return "" }
        // The report first (SIGUSR1), while it still serves: a proxy busy closing its connections after SIGTERM may
        // miss the grace period below and be killed before it prints.
        Glibc.kill(process.processIdentifier, SIGUSR1)
        let reported = Date().addingTimeInterval(5)
        while Date() < reported, !((try? String(contentsOfFile: reportPath, encoding: .utf8)) ?? "").contains("cuts ") {
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let text = (try? String(contentsOfFile: reportPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: reportPath)
        return text.split(separator: "\n").last { $0.hasPrefix("cuts ") }.map(String.init) ?? ""
    }

    deinit { if process.isRunning { process.terminate(); process.waitUntilExit() } }
}
