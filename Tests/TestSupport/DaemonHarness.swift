import DaemonSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A terminal box for tests: the real pcscd, the emulator with an issued campus card on its vpcd reader, a card
/// office keystore and a terminal's export of it, a loaded blacklist, a config file, and `cardd` as a process.
/// Everything lives in one temporary directory, removed by `cleanUp()`.
public final class DaemonHarness: @unchecked Sendable {
    public let work: String
    public let emulator: EmulatorProcess
    public let officeKeystore: String
    public let terminalKeystore: String
    public let storePath: String
    public let socketPath: String
    public let configPath: String
    public let stderrPath: String
    public let cardUID = "04A1B2C3"
    public private(set) var process: Process?
    private var config: [String: Any]

    /// Issues a card (serial 20260001) with `load` yuan on the purse and, when `water` is set, a filled water wallet;
    /// loads a one-entry blacklist (so the offline policy's "blacklist never loaded" does not refuse); writes the
    /// config (`mode`, terminal 21, then `overrides` merged at the top level, one level deep).
    /// `localBlacklist: false`: no blacklist is imported (a box that gets its list from the settlement service).
    public init(mode: String = "pos", load: String = "100", water: Bool = false, localBlacklist: Bool = true,
                overrides: [String: Any] = [:]) throws {
        config = [:]
        work = NSTemporaryDirectory() + "cardd-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let blank = work + "/blank.mfd"
        _ = FileManager.default.createFile(atPath: blank, contents: Data(SampleCards.blank1K()))
        emulator = try EmulatorProcess(card: blank)
        officeKeystore = work + "/office.json"
        terminalKeystore = work + "/terminal.json"
        storePath = work + "/cardd.sqlite"
        socketPath = work + "/cardd.sock"
        configPath = work + "/cardd.json"
        stderrPath = work + "/cardd.stderr"
        try Self.check(cardctl(["keystore", "create", officeKeystore]))
        try Self.check(cardctl(["keystore", "export", officeKeystore, terminalKeystore]))
        let office = ["--keystore", officeKeystore, "--journal", work + "/office-journal.sqlite", "--terminal-id", "1"]
        try Self.check(cardctl(["card", "issue", "--serial", "20260001", "--account", "3120456", "--type", "student"] + office))
        if load != "0" { try Self.check(cardctl(["card", "load", load] + office)) }
        if water { try Self.check(cardctl(["card", "water", "settle"] + office)) }
        if localBlacklist {
            let blacklist = work + "/blacklist.csv"
            try "version,serial,uid,action,reason\n1,99999999,0A0B0C0D,add,reported lost\n".write(toFile: blacklist, atomically: true, encoding: .utf8)
            try Self.check(cardctl(["blacklist", "import", blacklist, "--journal", storePath]))
        }
        config = [
            "terminalID": 21, "mode": mode, "keystore": terminalKeystore, "stateDirectory": work,
            "store": ["path": storePath], "control": ["socket": socketPath],
        ]
        if mode == "water" {
            config["water"] = ["backend": "simulated", "unitPrice": "0.05", "pulsesPerUnit": 10, "prefetchPulses": 3]
        }
        for (key, value) in overrides {
            if var section = config[key] as? [String: Any], let more = value as? [String: Any] {
                section.merge(more) { $1 }
                config[key] = section
            } else {
                config[key] = value
            }
        }
        try writeConfig()
    }

    public func writeConfig() throws {
        let data = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
        try data.write(to: URL(fileURLWithPath: configPath))
    }

    /// Runs cardctl; `socket`: adds `--socket` for the daemon's commands.
    @discardableResult
    public func cardctl(_ arguments: [String], stdin: String? = nil, timeout: TimeInterval = 60) throws -> (status: Int32, stdout: String, stderr: String) {
        run(try BuiltExecutable.path("cardctl"), arguments, stdin: stdin, timeout: timeout)
    }

    /// Runs a cardctl command against this daemon's socket.
    @discardableResult
    public func daemonCommand(_ arguments: [String], stdin: String? = nil, timeout: TimeInterval = 60) throws -> (status: Int32, stdout: String, stderr: String) {
        try cardctl(arguments + ["--socket", socketPath], stdin: stdin, timeout: timeout)
    }

    /// Starts cardd and waits until its control socket answers `status` (and pcscd answered it: READY).
    public func start(environment: [String: String] = [:], waitUntilReady: Bool = true) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltExecutable.path("cardd"))
        process.arguments = ["--config", configPath]
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        self.process = process
        guard waitUntilReady else { return }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            guard process.isRunning else { throw TestSetupError("cardd exited with \(process.terminationStatus): \(log)") }
            if log.contains("cardd: ready") { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSetupError("cardd did not become ready within 20 s: \(log)")
    }

    /// What cardd wrote on stderr so far.
    public var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, and waits for the exit; returns the exit status.
    @discardableResult
    public func stop(timeout: TimeInterval = 20) -> Int32? {
        guard let process, process.isRunning else { return process?.terminationStatus }
        process.terminate()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { return nil }
        return process.terminationStatus
    }

    /// SIGKILL: the box loses power (as far as the process can tell).
    public func kill9() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Puts the card on the reader or takes it off (the emulator's control socket).
    public func card(present: Bool) throws {
        let before = EmulatorProcess.eventState(reader: emulator.readerName)
        try Self.check(emulator.ctl(present ? "insert" : "remove"))
        // Until pcscd's event thread saw it. Not a connect: cardd may hold the card (never reset it under its session),
        // and a refused connect can come before the event thread's poll (see waitForPcscdEvent).
        if let before, before.present != present {
            do {
                try EmulatorProcess.waitForPcscdEvent(reader: emulator.readerName, present: present, since: before.count, timeout: 8)
            } catch let error where present {
                // pcscd can show the reader empty (a failed reset or power-down under a session marks it so) before its
                // event thread saw the card leave; a card back then is never reported (HardwareNotes). What a holder
                // does, once: take the card off, wait until the event thread saw that, present it again.
                try Self.check(emulator.ctl("remove"))
                guard let away = EmulatorProcess.eventState(reader: emulator.readerName) else { throw error }
                if away.present { try EmulatorProcess.waitForPcscdEvent(reader: emulator.readerName, present: false, since: away.count) }
                Thread.sleep(forTimeInterval: 1)
                guard let again = EmulatorProcess.eventState(reader: emulator.readerName) else { throw error }
                try Self.check(emulator.ctl("insert"))
                try EmulatorProcess.waitForPcscdEvent(reader: emulator.readerName, present: true, since: again.count)
            }
        } else {
            try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: present, resetting: false)
        }
    }

    /// One raw request line on a fresh connection; the answer lines until the one with "ok" or "error".
    public func raw(_ line: String, timeout: Duration = .seconds(10)) throws -> [[String: Any]] {
        let client = try ControlSocketClient(path: socketPath)
        defer { client.close() }
        try client.send(rawLine: line)
        var lines: [[String: Any]] = []
        while let data = try client.readLine(timeout: timeout) {
            let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? ["unparsed": String(decoding: data, as: UTF8.self)]
            lines.append(object)
            if object["ok"] != nil || object["error"] != nil { break }
        }
        return lines
    }


    /// Stops cardd and the emulator and removes the directory.
    public func cleanUp() {
        if stop() == nil { kill9() }
        emulator.terminate()
        try? FileManager.default.removeItem(atPath: work)
    }

    static func check(_ result: (status: Int32, stdout: String, stderr: String)) throws {
        guard result.status == 0 else { throw TestSetupError("setup step failed (\(result.status)): \(result.stderr)\(result.stdout)") }
    }
}

/// The office's cardctl arguments for a box's card (the card office keystore, terminal 1), as DaemonHarness uses them.
extension DaemonHarness {
    public var office: [String] { ["--keystore", officeKeystore, "--journal", work + "/office-journal.jsonl", "--terminal-id", "1"] }

    /// The terminal store's journal lines of one kind (`purse-debit`, `water-debit`, ...).
    public func journal(_ kind: String) throws -> [String] {
        let list = try cardctl(["journal", "list", "--journal", storePath])
        return list.stdout.split(separator: "\n").map(String.init).filter { $0.contains(" \(kind) ") }
    }

    /// The card as the card office reads it (`cardctl card show`).
    public func showCard() throws -> String {
        let shown = try cardctl(["card", "show"] + office)
        return shown.stdout + shown.stderr
    }
}

