import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A field technician starting cardd: bad configurations and stores are refused with the documented exit status and
/// a message naming the problem; systemd is told READY only when the daemon answers, and kept informed (issue 10,
/// item 8).
@Suite(.serialized) struct DaemonLifecycleTests {
    /// A configuration file (JSON text) in a directory of its own; returns its path.
    func config(_ text: String) throws -> String {
        let directory = NSTemporaryDirectory() + "cardd-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/cardd.json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test(arguments: [
        (#"{"mode": "pos"}"#, "terminalID"),
        (#"{"terminalID": 21, "mode": "pos", "colour": "blue"}"#, "colour"),
        (#"{"terminalID": 21, "mode": "pos", "store": {"paht": "/tmp/x.sqlite"}}"#, "store.paht"),
        (#"{"terminalID": 21, "mode": "cashier"}"#, "mode"),
        (#"{"terminalID": 0, "mode": "pos"}"#, "terminalID"),
        (#"{"terminalID": "twenty", "mode": "pos"}"#, "terminalID"),
        (#"{"terminalID": 21, "mode": "water", "water": {"unitPrice": 0.05, "backend": "simulated"}}"#, "water.unitPrice"),
        (#"{"terminalID": 21, "mode": "pos", "offline": {"maxDebit": "5.001"}}"#, "offline.maxDebit"),
        (#"{"terminalID": 21, "mode": "pos", "keystore": "relative/keystore.json"}"#, "keystore"),
        (#"{"terminalID": 21, "mode": "pos", "#, "configuration"),
    ])
    func aBadConfigurationExits78NamingTheKey(_ text: String, key: String) throws {
        let path = try config(text)
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        for arguments in [["--config", path], ["--config", path, "--check-config"]] {
            let result = try runCardd(arguments)
            #expect(result.status == 78, "\(arguments): \(result.status) \(result.stderr)")
            #expect(result.stderr.contains(key), "\(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
        }
    }

    @Test func aMissingConfigurationFileExits78() throws {
        let result = try runCardd(["--config", "/nonexistent/cardd.json"])
        #expect(result.status == 78 && result.stderr.contains("/nonexistent/cardd.json"), "\(result.stderr)")
    }

    /// A store file of garbage bytes: exit 70, and the message says the store is corrupt (or not a database).
    @Test func aCorruptStoreExits70() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: box.storePath + suffix) }
        var generator = SystemRandomNumberGenerator()
        let garbage = Data((0..<65_536).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try garbage.write(to: URL(fileURLWithPath: box.storePath))
        for arguments in [["--config", box.configPath], ["--config", box.configPath, "--check-config"]] {
            let result = try runCardd(arguments)
            #expect(result.status == 70, "\(arguments): \(result.status) \(result.stderr)")
            let message = result.stderr.lowercased()
            #expect(message.contains(box.storePath.lowercased()) && (message.contains("corrupt") || message.contains("not a database")),
                    "\(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: box.storePath)) == garbage, "the evidence is left as it was")
    }

    @Test func versionAndCheckConfig() throws {
        let version = try runCardd(["--version"])
        #expect(version.status == 0 && version.stdout.contains("0.") && version.stdout.contains("commit "), "\(version.stdout)")
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        let check = try runCardd(["--config", box.configPath, "--check-config"])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("terminal 21") && check.stdout.contains("mode pos") && check.stdout.contains(box.storePath), "\(check.stdout)")
        // The example configuration of the deployment is a good one too (its paths aside).
        let example = try runCardd(["--config", "systemd/cardd.example.json", "--check-config"])
        #expect(example.status == 78 || example.status == 0, "\(example.stderr)")
        #expect(!example.stderr.contains("unknown-key"), "\(example.stderr)")
    }

    /// `--check-config` reads `ONECARD_CONFIG` when no `--config` is given, and changes nothing: a store that is not
    /// there yet is not created (nor its directories), only its place checked.
    @Test func theCheckReadsONECARD_CONFIGAndCreatesNothing() throws {
        let elsewhere = NSTemporaryDirectory() + "cardd-check-\(UUID().uuidString.prefix(8))"
        let box = try DaemonHarness(overrides: ["store": ["path": elsewhere + "/deeper/cardd.sqlite"]])
        defer { box.cleanUp() }
        let check = try runCardd(["--check-config"], environment: ["ONECARD_CONFIG": box.configPath, "ONECARD_WATCHDOGSECONDS": "5"])
        #expect(check.status == 0 && check.stdout.contains("terminal 21") && check.stdout.contains(elsewhere), "\(check.status) \(check.stderr)")
        // A variable that names no setting (ONECARD_WATCHDOG_SECONDS is) is told, not silently ignored.
        #expect(check.stderr.contains("ONECARD_WATCHDOGSECONDS names no setting"), "\(check.stderr)")
        #expect(!FileManager.default.fileExists(atPath: elsewhere), "the check created \(elsewhere)")
        let missing = try runCardd(["--check-config"], environment: ["ONECARD_CONFIG": box.work + "/nothing.json"])
        #expect(missing.status == 78 && missing.stderr.contains(box.work + "/nothing.json"), "\(missing.stderr)")
    }

    /// What the control socket cannot be (a path longer than `sockaddr_un` holds, a group that does not exist) is
    /// the configuration's: `--check-config` finds it, and a start refused for it exits 78 (systemd does not restart).
    @Test(arguments: [
        ["socket": NSTemporaryDirectory() + String(repeating: "s", count: 120) + ".sock"],
        ["group": "no-such-group-\(UUID().uuidString.prefix(6))"],
        ["socket": "/nonexistent-\(UUID().uuidString.prefix(6))/cardd.sock"],
    ])
    func aControlSocketItCannotMakeIsAConfigurationError(_ control: [String: String]) throws {
        let box = try DaemonHarness(overrides: ["control": control])
        defer { box.cleanUp() }
        for arguments in [["--config", box.configPath, "--check-config"], ["--config", box.configPath]] {
            let result = try runCardd(arguments)
            #expect(result.status == 78, "\(arguments): \(result.status) \(result.stderr)")
            #expect(result.stderr.contains("control"), "\(result.stderr)")
        }
    }

    /// A second cardd on the same store (another socket, so the socket does not stop it) is refused at start, naming
    /// the first's pid (a technician's walk-through ran two, which fought over every tap).
    @Test func aSecondDaemonOnTheSameStoreIsRefused() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        var second = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: box.configPath))) as? [String: Any] ?? [:]
        second["control"] = ["socket": box.work + "/second.sock"]
        let secondPath = box.work + "/second.json"
        try JSONSerialization.data(withJSONObject: second).write(to: URL(fileURLWithPath: secondPath))
        let refused = try runCardd(["--config", secondPath], timeout: 20)
        #expect(refused.status == 78 && refused.stderr.contains("another cardd (pid ") && refused.stderr.contains("runs on \(box.storePath)"),
                "\(refused.status) \(refused.stderr)")
        #expect(try box.status()["ok"] as? Bool == true, "the first one runs on")
        #expect(box.stop() == 0)
        // Once it is gone, the store is free again.
        try box.start()
        #expect(box.stop() == 0)
    }

    /// A POS given the office keystore (with the loader master) is told so: it works, but a stolen box could load cards.
    @Test func aPOSWithTheLoaderMasterIsWarned() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        let terminal = try runCardd(["--config", box.configPath, "--check-config"])
        #expect(terminal.status == 0 && !terminal.stderr.contains("loader master"), "\(terminal.stderr)")
        var office = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: box.configPath))) as? [String: Any] ?? [:]
        office["keystore"] = box.officeKeystore
        let officePath = box.work + "/office-keystore.json"
        try JSONSerialization.data(withJSONObject: office).write(to: URL(fileURLWithPath: officePath))
        let warned = try runCardd(["--config", officePath, "--check-config"])
        #expect(warned.status == 0 && warned.stderr.contains("holds the loader master, which a pos terminal never uses"), "\(warned.status) \(warned.stderr)")
    }

    /// The uplink's secret file is checked by `--check-config` as at the start: missing, open to others, not hex.
    @Test func theCheckFindsWhatTheUplinkWouldRefuse() throws {
        let secret = NSTemporaryDirectory() + "uplink-\(UUID().uuidString.prefix(8)).secret"
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let configured = try DaemonHarness(overrides: ["uplink": ["url": "http://127.0.0.1:9", "secretFile": secret]])
        defer { configured.cleanUp() }
        let check = { try runCardd(["--config", configured.configPath, "--check-config"]) }
        let missing = try check()
        #expect(missing.status == 78 && missing.stderr.contains("uplink.secretFile: cannot read"), "\(missing.status) \(missing.stderr)")
        try Data(String(repeating: "ab", count: 32).utf8).write(to: URL(fileURLWithPath: secret))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: secret)
        let open = try check()
        #expect(open.status == 78 && open.stderr.contains("readable by others"), "\(open.status) \(open.stderr)")
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: secret)
        let good = try check()
        #expect(good.status == 0 && good.stdout.contains("uplink http://127.0.0.1:9"), "\(good.status) \(good.stderr)")
        try Data("not hex at all, not even close".utf8).write(to: URL(fileURLWithPath: secret))
        let garbled = try check()
        #expect(garbled.status == 78 && garbled.stderr.contains("does not hold a hex secret"), "\(garbled.status) \(garbled.stderr)")
    }

    /// sd_notify through a real datagram socket: READY=1 only once status answers, STATUS= names the mode,
    /// WATCHDOG=1 about every second (WATCHDOG_USEC 2 s), STOPPING=1 at SIGTERM.
    @Test func systemdIsToldReadyWatchdogAndStopping() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        let listener = try NotifyListener(path: box.work + "/notify.sock")
        try box.start(environment: ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "2000000"], waitUntilReady: false)
        var before: [String] = []
        var ready: String?
        let deadline = Date().addingTimeInterval(20)
        while ready == nil, Date() < deadline {
            guard let datagram = listener.receive(milliseconds: 200) else { continue }
            if datagram.contains("READY=1") { ready = datagram } else { before.append(datagram) }
        }
        let first = try #require(ready, "no READY=1: \(box.log)")
        // Ready means ready: the control socket answers at once.
        #expect(try box.status()["ok"] as? Bool == true)
        #expect(before.allSatisfy { !$0.contains("WATCHDOG=1") }, "no watchdog ping before READY: \(before)")
        #expect(first.contains("STATUS=pos terminal 21"), "\(first)")
        var pings: [Date] = []
        let watch = Date().addingTimeInterval(3.5)
        while Date() < watch {
            if let datagram = listener.receive(milliseconds: 200), datagram.contains("WATCHDOG=1") {
                pings.append(Date())
                #expect(datagram.contains("STATUS=pos"), "\(datagram)")
            }
        }
        #expect(pings.count >= 2 && pings.count <= 5, "WATCHDOG_USEC 2 s: a ping about every second, got \(pings.count)")
        let stopping = Background { () -> String? in
            let end = Date().addingTimeInterval(10)
            while Date() < end {
                if let datagram = listener.receive(milliseconds: 200), datagram.contains("STOPPING=1") { return datagram }
            }
            return nil
        }
        #expect(box.stop() == 0)
        #expect(try stopping.value() != nil, "STOPPING=1 at SIGTERM")
    }
}

/// A real AF_UNIX datagram socket standing in for systemd's notify socket.
final class NotifyListener: @unchecked Sendable {
    let fd: Int32
    let path: String

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw TestSetupError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + 1)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw TestSetupError("bind \(path): \(String(cString: strerror(errno)))") }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// The next datagram, or nil if none arrives within `milliseconds`.
    func receive(milliseconds: Int32) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, milliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }
}
