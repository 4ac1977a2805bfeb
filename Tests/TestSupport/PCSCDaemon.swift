import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The pcscd the tests talk to, and whether the tests may kill it.
///
/// - In a **private namespace** (`scripts/in-namespace`: its own mount, network and PID namespaces, a tmpfs over
///   /run/pcscd, which `scripts/test` uses for every group) no other pcscd can be seen: the harness starts "the"
///   pcscd there and may kill and restart it.
/// - In the **plain fallback** (no root, or no `unshare`) a pcscd may belong to the machine. The harness uses one that
///   answers, starts its own only when none does, and remembers the pid of the one it started (in `recordPath`, with
///   the process start time so that a reused pid is not taken for it). It kills only that one; tests that must kill
///   pcscd are skipped, with the reason, when the running one is not the tests' (`mayRestart`).
public enum PCSCDaemon {
    public static let directory = "/run/pcscd"
    public static let socketPath = directory + "/pcscd.comm"
    static let pidFilePath = directory + "/pcscd.pid"

    /// Set to 1 by scripts/in-namespace; believed only when /run/pcscd is also a mount point of its own.
    public static let namespaceVariable = "ONECARD_PCSCD_NAMESPACE"

    public enum Isolation: Sendable, Equatable {
        /// Our own mount + network + PID namespaces: every pcscd seen is the tests' own.
        case privateNamespace
        /// The machine's /run/pcscd: a pcscd may be someone else's.
        case shared
    }

    /// Decided once per test process.
    public static let isolation: Isolation = {
        guard ProcessInfo.processInfo.environment[namespaceVariable] == "1" else { return .shared }
        return isPrivateTmpfs(directory) ? .privateNamespace : .shared
    }()

    /// Where the fallback remembers the pcscd it started: "PID STARTTIME", next to that pcscd's own pid file and
    /// socket (so a record never describes a pcscd of another mount namespace; /run is emptied at boot). In a private
    /// namespace no record is needed: the pid file in the private /run/pcscd names the namespace's own pcscd.
    public static let recordPath = directory + "/onecard-tests-pcscd.pid"

    /// pcscd's output: per group when scripts/test sets ONECARD_PCSCD_LOG.
    public static var logPath: String { ProcessInfo.processInfo.environment["ONECARD_PCSCD_LOG"] ?? "/tmp/pcscd-tests.log" }

    /// The live pcscd named by /run/pcscd/pcscd.pid (a killed one can linger as a zombie when PID 1 does not reap:
    /// that one is dead). Not `pgrep`: from the host that also sees the pcscds inside other namespaces.
    static var pidFilePCSCD: Int32? {
        // pcsc-lite 1.9.9 writes "PID\n\0": the digits up to the first non-digit.
        guard let data = FileManager.default.contents(atPath: pidFilePath),
              let pid = Int32(String(decoding: data.prefix { (0x30...0x39).contains($0) }, as: UTF8.self)), isLivePcscd(pid) else { return nil }
        return pid
    }

    /// Whether a live pcscd serves /run/pcscd (ours or, in the fallback, perhaps the machine's).
    public static var isRunning: Bool { pidFilePCSCD != nil }

    /// The live pcscd the tests started, if that is the one running: in a private namespace the one named by the
    /// private pid file; in the fallback the one in our record, if its start time still matches.
    public static var ownedPID: Int32? {
        switch isolation {
        case .privateNamespace:
            return pidFilePCSCD
        case .shared:
            guard let text = try? String(contentsOfFile: recordPath, encoding: .utf8) else { return nil }
            let words = text.split(separator: " ")
            guard words.count == 2, let pid = Int32(words[0]), let started = UInt64(words[1].trimmingCharacters(in: .whitespacesAndNewlines)),
                  isLivePcscd(pid), startTime(of: pid) == started else { return nil }
            return pid
        }
    }

    /// Whether the tests may kill and restart pcscd: always in a private namespace; in the fallback only when the
    /// running pcscd is the one the tests started (it is started here when none runs). For `.enabled(if:)`.
    public static func mayRestart() -> Bool {
        if isolation == .privateNamespace { return true }
        guard (try? ensureRunning()) != nil else { return false }
        return ownedPID != nil
    }

    /// Why `mayRestart()` is false, for the skip message.
    public static let notOursReason = """
        the running pcscd was not started by the tests: they never kill it (run scripts/test as root for a private \
        namespace with its own pcscd, or stop that pcscd)
        """

    /// Makes sure a pcscd answers: uses the running one, or starts one (and remembers it). Throws when it cannot.
    public static func ensureRunning() throws {
        // A socket-activated pcscd (systemd) runs no process until a client connects: it answers all the same.
        if socketAnswers() { return }
        if isRunning { return try waitForSocket() }  // one is starting up
        try start()
        try waitForSocket()
        // setsid forks when its caller leads a process group: the pid is the one pcscd writes, not the child's.
        if isolation == .shared, let pid = pidFilePCSCD, let started = startTime(of: pid) {
            try? "\(pid) \(started)\n".write(toFile: recordPath, atomically: true, encoding: .utf8)
        }
    }

    /// Starts a detached `pcscd -f` (its output to `logPath`).
    static func start() throws {
        // A killed pcscd leaves its pid file and socket behind, and a new one refuses to start while the pid names
        // a process (even a zombie): remove them (called only when the pid file names no live pcscd).
        try? FileManager.default.removeItem(atPath: pidFilePath)
        try? FileManager.default.removeItem(atPath: socketPath)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        // env --default-signal: the test process ignores some signals, and ignored signals survive exec.
        process.arguments = ["/usr/bin/env", "--default-signal", "/usr/sbin/pcscd", "-f"]
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw TestSetupError("cannot start pcscd (\(error)): install it with scripts/bootstrap")
        }
    }

    /// Kills the tests' own pcscd the hard way (SIGKILL, as a crash would) and waits until it is gone. Throws, and
    /// kills nothing, when the running pcscd is not the tests' (a test calling this is guarded by `mayRestart`).
    public static func kill() throws {
        guard let pid = ownedPID else {
            throw TestSetupError("refusing to kill pcscd: \(notOursReason)")
        }
        Glibc.kill(pid, SIGKILL)
        for _ in 0..<100 where isLivePcscd(pid) { Thread.sleep(forTimeInterval: 0.05) }
    }

    static func waitForSocket() throws {
        for _ in 0..<100 {
            if socketAnswers() {
                Thread.sleep(forTimeInterval: 0.2)  // let it load the vpcd driver
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSetupError("pcscd did not create \(socketPath) within 5 s: see \(logPath)")
    }

    // MARK: - /proc

    /// A process that is pcscd and not a zombie.
    static func isLivePcscd(_ pid: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
        return status.hasPrefix("Name:\tpcscd\n") && !status.contains("State:\tZ")
    }

    /// Field 22 of /proc/PID/stat: the start time in clock ticks since boot (with the pid, it names one process).
    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return nil }
        // After "pid (comm)": state is field 3, so starttime is the 20th word after the parenthesis.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Whether a tmpfs is mounted on `path` itself (/proc/self/mountinfo: field 5 is the mount point, the first
    /// field after " - " the file system type). On the host /run/pcscd is a directory of /run, not a mount.
    static func isPrivateTmpfs(_ path: String) -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return info.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4, fields[4] == path, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return false }
            return fields[dash + 1] == "tmpfs"
        }
    }

    /// Whether something accepts connections on pcscd's socket.
    static func socketAnswers() -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
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
