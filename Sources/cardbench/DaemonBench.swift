import ArgumentParser
import CampusCard
import CardEmulator
import CardSession
import DaemonSupport
import Foundation
import GRDBSQLite
import MifareClassic
import PCSC
import TerminalStore
#if canImport(Glibc)
import Glibc
#endif

/// `cardbench daemon`: the terminal daemon as a process, through pcscd + vpcd + `cardemu` and its control socket.
/// Tap latency split into card detection, daemon work and the debit's APDUs alone; the sale time at growing store
/// sizes; cardd's resident memory after many taps; the journal's commit rate next to raw SQLite on the same disk.
/// Needs a pcscd of its own (scripts/bench-daemon starts one in a private namespace).
struct DaemonBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "cardd as a process: tap latency (detection, daemon, APDUs), sale time at 0/100k/1M records, RSS after 10k taps, commits/s.",
        discussion: "Run it through scripts/bench-daemon (a private namespace with its own pcscd); cardd, cardemu and cardctl are taken from the directory cardbench runs from.")

    @Option(help: "Sales measured for the tap latency (and debits for the APDU baselines).") var sales = 100
    @Option(help: "Store sizes (records) for the sale time, comma separated.") var sizes = "0,100000,1000000"
    @Option(help: "Sales measured at each store size.") var sizeSales = 50
    @Option(help: "Tap counts at which cardd's memory is read, comma separated (the last is the total). A tap takes ~0.8 s (pcscd polls vpcd every 400 ms, in and out): 0,1000,10000 runs 2.2 h.")
    var memoryTaps = "0,100,300"
    @Option(help: "What a memory tap is: window (a fixed-price window debits 0.01 from the card: the whole sale path) or balance (no sale: the card is read).")
    var memoryTap: MemoryTap = .window
    @Option(help: "Commits per commit-rate run (raw SQLite vs TerminalStore).") var commits = 400
    @Option(help: "Directory for the box (stores, keystores, logs): the disk under test. Default: a new directory in the temporary directory.")
    var directory: String?
    @Option(help: "vpcd port cardemu presents its card on.") var port: UInt16 = 35963
    @Option(help: "Sections to run, comma separated: latency, sizes, memory, commits.") var only = "latency,sizes,memory,commits"
    @Flag(help: "Keep the box's directory (stores, cardd's log) afterwards.") var keep = false
    @Option(help: "Save cardd's /proc/PID/smaps at each memory checkpoint into this directory (smaps-TAPS.txt): which mappings are resident.")
    var smapsDirectory: String?

    enum MemoryTap: String, ExpressibleByArgument, Sendable { case window, balance }

    func run() async throws {
        let sections = Set(only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let base = directory ?? NSTemporaryDirectory() + "cardbench-daemon-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        print("cardbench daemon: cardd through libpcsclite -> pcscd -> vpcd -> cardemu (ACR122U profile); box in \(base) (\(StoreBench.fileSystem(of: base)))")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) CPUs; \(ProcessInfo.processInfo.operatingSystemVersionString); build \(DaemonBox.buildKind)")
        let box = try await DaemonBox.make(base: base, port: port)
        defer {
            box.cleanUp()
            if directory == nil && !keep { try? FileManager.default.removeItem(atPath: base) }
        }
        let started = ContinuousClock.now
        if sections.contains("latency") { try await latency(box) }
        if sections.contains("sizes") { try await storeSizes(box) }
        if sections.contains("memory") { try await memory(box) }
        if sections.contains("commits") { try commitRate(base) }
        print("")
        print(String(format: "total %.0f s; ", elapsedSeconds(since: started)) + "cardd's log of the last run: \(box.daemonLog)"
            + (directory == nil && !keep ? " (removed: --keep keeps it)" : ""))
    }

    // MARK: 1. tap latency

    private func latency(_ box: DaemonBox) async throws {
        print("")
        print("1. tap latency, warm daemon: \(sales) sales of 0.01 armed through the control socket (arm, card inserted, sale-done)")
        // The baselines first, while no daemon holds the reader.
        try box.emulator("insert")
        try await box.waitForCard(present: true)
        let baseline = try await Baseline.run(box: box, count: sales)
        try box.emulator("remove")
        try await box.waitForCard(present: false)

        let store = box.work + "/latency.sqlite"
        try box.prepareStore(store, records: 0, terminalID: 21)
        let daemon = try box.startDaemon(store: store, terminalID: 21)
        let apdusBefore = try box.emulatorAPDUs()
        let taps = try daemon.runSales(sales, box: box)
        let apdusPerTap = Double(try box.emulatorAPDUs() - apdusBefore) / Double(sales)
        try daemon.stop()

        let detect = taps.map(\.detect), work = taps.map(\.work), total = taps.map(\.total)
        print("  what                                                   median ms   p95 ms    APDUs")
        func row(_ name: String, _ values: [Double], _ apdus: String = "") {
            print(name.padding(toLength: 55, withPad: " ", startingAt: 0)
                + String(format: "%10.2f %8.2f", StoreBench.percentile(values, 0.5), StoreBench.percentile(values, 0.95)) + "    " + apdus)
        }
        row("  a. debit's APDUs alone (CampusCardOperations.debit)", baseline.apdus, String(format: "%5.0f", baseline.apduCount))
        row("  b. a + in-memory journal, one session, card attached", baseline.session)
        row("  c. library tap: connect + UID + debit, TerminalStore", baseline.library, String(format: "%5.0f", baseline.libraryAPDUs))
        row("  d. cardd: card-arrived -> sale-done (debit + journal)", work)
        row("  e. cardd: insert -> card-arrived (pcscd sees the card,", detect)
        print("     connect, UID, profile: the daemon's attach)")
        row("  f. cardd: insert -> sale-done (the holder's wait)", total, String(format: "%5.1f", apdusPerTap))
        let overheadWork = StoreBench.percentile(work, 0.5) - StoreBench.percentile(baseline.apdus, 0.5)
        let overheadLibrary = StoreBench.percentile(total, 0.5) - StoreBench.percentile(baseline.library, 0.5)
        print(String(format: "  daemon overhead over the APDUs (d - a, medians): %.2f ms: the sale's two journal commits (section 4) and the daemon's machinery", overheadWork))
        print(String(format: "  daemon total over the library tap (f - c, medians): %.2f ms (pcscd's card detection and the daemon's machinery)", overheadLibrary))
        print("  APDUs: a, c per debit (c: also connect's profile probe and UID); f: all APDUs the emulator answered per daemon tap")
    }

    // MARK: 2. store sizes

    private func storeSizes(_ box: DaemonBox) async throws {
        let sizes = self.sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        print("")
        print("2. sale time at growing store sizes: \(sizeSales) sales each, after prefilling the store (decided, acknowledged records of 20,000 other cards)")
        print("  records    prefill s   db MiB   arrived->done median ms   p95 ms   insert->done median ms   p95 ms")
        for (index, size) in sizes.enumerated() {
            let store = box.work + "/size-\(size).sqlite"
            let terminalID = UInt16(40 + index)
            let fillStart = ContinuousClock.now
            try box.prepareStore(store, records: size, terminalID: terminalID)
            let fill = elapsedSeconds(since: fillStart)
            let bytes = DaemonBox.fileBytes(store) + DaemonBox.fileBytes(store + "-wal")
            let daemon = try box.startDaemon(store: store, terminalID: terminalID)
            let taps = try daemon.runSales(sizeSales, box: box)
            try daemon.stop()
            StoreBench.remove(store)
            print(String(format: "  %9d   %8.1f   %6.1f   %23.2f   %6.2f   %22.2f   %6.2f", size, fill, Double(bytes) / 1_048_576,
                         StoreBench.percentile(taps.map(\.work), 0.5), StoreBench.percentile(taps.map(\.work), 0.95),
                         StoreBench.percentile(taps.map(\.total), 0.5), StoreBench.percentile(taps.map(\.total), 0.95)))
        }
    }

    // MARK: 3. memory

    private func memory(_ box: DaemonBox) async throws {
        let checkpoints = memoryTaps.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.sorted()
        print("")
        let what = memoryTap == .window
            ? "a fixed-price window sale (00:00-24:00 at 0.01): card inserted, debited, journalled, removed"
            : "a card inserted with no sale (the balance is read), removed"
        print("3. cardd's memory over \(checkpoints.last ?? 0) taps; a tap is \(what); one events subscriber stays connected")
        print("  taps     VmRSS MiB   VmHWM MiB   RssAnon MiB   RssFile MiB   Pss MiB   fds   threads   taps/s   tap median ms")
        let store = box.work + "/memory.sqlite"
        try box.prepareStore(store, records: 0, terminalID: 31)
        if memoryTap == .window {
            try await box.topUp(toAtLeast: Fen(checkpoints.last ?? 0) + Fen(1_000))
        }
        let daemon = try box.startDaemon(store: store, terminalID: 31, window: memoryTap == .window)
        try await Task.sleep(for: .seconds(1))  // settled after start-up
        // The installed cardd links the Swift runtime statically (scripts/install); a shared one starts ~7 MiB larger.
        let maps = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(daemon.process.processIdentifier)/maps")).readToEnd()) ?? nil
        let shared = maps.map { String(decoding: $0, as: UTF8.self).contains("libswiftCore.so") } ?? false
        print("  cardd's Swift runtime: " + (shared ? "shared libraries (not as installed: build with --static-swift-stdlib)" : "linked statically (as scripts/install builds it)"))
        var done = 0
        for checkpoint in checkpoints {
            let start = ContinuousClock.now
            var times: [Double] = []
            while done < checkpoint {
                times.append(try daemon.tap(expect: memoryTap == .window ? "sale-done" : "balance", box: box).total)
                done += 1
            }
            let seconds = elapsedSeconds(since: start)
            let memory = try daemon.memory()
            if let smapsDirectory {
                try FileManager.default.createDirectory(atPath: smapsDirectory, withIntermediateDirectories: true)
                // FileHandle reads to the end (String(contentsOfFile:) stops at the first chunk of a /proc file).
                let smaps = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(daemon.process.processIdentifier)/smaps"))
                defer { try? smaps.close() }
                try (smaps.readToEnd() ?? Data()).write(to: URL(fileURLWithPath: smapsDirectory + "/smaps-\(done).txt"))
            }
            let rate = times.isEmpty ? "-" : String(format: "%.1f", Double(times.count) / seconds)
            let median = times.isEmpty ? "-" : String(format: "%.2f", StoreBench.percentile(times, 0.5))
            print(String(format: "  %6d   %9.1f   %9.1f   %11.1f   %11.1f   %7.1f   %3d   %7d   ", done, memory.rss, memory.hwm, memory.anon,
                         memory.file, memory.pss, memory.fds, memory.threads)
                + String(repeating: " ", count: max(0, 6 - rate.count)) + rate + "   " + String(repeating: " ", count: max(0, 13 - median.count)) + median)
        }
        try daemon.stop()
        print("  goal: VmRSS <= 30 MiB after 10k taps. RssFile: pages of mapped files (the Swift runtime, Foundation, ICU data), shared")
        print("  and reclaimable; RssAnon: the daemon's own heap and stacks (a leak shows there)")
    }

    // MARK: 4. commits

    private func commitRate(_ base: String) throws {
        var raw = 0.0, journal = 0.0
        for round in 0..<3 {
            let rawPath = base + "/raw-\(round).sqlite", storePath = base + "/commits-\(round).sqlite"
            raw = max(raw, try StoreBench.rawCommits(path: rawPath, count: commits))
            journal = max(journal, try StoreBench.journalCommits(path: storePath, count: commits))
            for path in [rawPath, storePath] { StoreBench.remove(path) }
        }
        print("")
        print("4. journal commit rate on the box's disk (as `cardbench store`: WAL, synchronous=FULL, best of 3 x \(commits) commits)")
        print("  raw sqlite3 C loop, one INSERT per commit      \(String(format: "%8.0f", raw)) commits/s  \(String(format: "%7.0f", 1e6 / raw)) µs/commit")
        print("  TerminalStore record + complete                \(String(format: "%8.0f", journal)) commits/s  \(String(format: "%7.0f", 1e6 / journal)) µs/commit   \(String(format: "%.2f", journal / raw))x raw")
        print("  a sale commits twice (intent before the card write, outcome after): \(String(format: "%.2f", 2e3 / journal)) ms of each sale is the journal's")
    }
}

// MARK: - Baselines

/// The same debit as the daemon's, without the daemon: through one PC/SC connection, in this process.
struct Baseline {
    /// ms per debit: the APDUs alone (timed inside the card session, in-memory journal).
    var apdus: [Double] = []
    var apduCount = 0.0
    /// ms per debit: one session on an attached card (async hop included), in-memory journal.
    var session: [Double] = []
    /// ms per library tap: CardConnection.open (connect, reset, profile) + UID + campusSession debit with a TerminalStore.
    var library: [Double] = []
    var libraryAPDUs = 0.0

    static func run(box: DaemonBox, count: Int) async throws -> Baseline {
        var result = Baseline()
        let keystore = try FileKeystore(path: box.terminalKeystore)
        let context = try await CardConnection.openContext()
        let memoryJournal = InMemoryTerminalJournal()
        let connection = try await CardConnection.open(reader: box.readerName, context: context)
        var apduTotal = 0
        for _ in 0..<count {
            let start = ContinuousClock.now
            let (inside, apdus) = try await connection.session { session, reselect in
                let operations = CampusCardOperations(session: session, keystore: keystore, reselect: reselect)
                let start = ContinuousClock.now
                _ = try operations.debit(Fen(1), terminal: Terminal(id: 98, journal: memoryJournal))
                return (elapsedSeconds(since: start) * 1000, session.apduCount)
            }
            result.session.append(elapsedSeconds(since: start) * 1000)
            result.apdus.append(inside)
            apduTotal += apdus
        }
        result.apduCount = Double(apduTotal) / Double(max(1, count))
        try await connection.card.disconnect(.leave)

        let storePath = box.work + "/library.sqlite"
        let store = try TerminalStore(path: storePath)
        defer {
            try? store.close()
            StoreBench.remove(storePath)
        }
        let terminal = Terminal(id: 97, journal: store, lastSeenCounter: { uid in (try? store.lastSeenCounter(cardUID: uid)) ?? nil })
        let before = try box.emulatorAPDUs()
        for _ in 0..<count {
            let start = ContinuousClock.now
            let connection = try await CardConnection.open(reader: box.readerName, context: context)
            let uid = try await connection.session { session, _ in try session.uid() }
            let report = await connection.campusSession(keystore: keystore, terminal: terminal) { operations, terminal in
                try operations.debit(Fen(1), terminal: terminal)
            }
            guard report.value != nil, !uid.isEmpty else {
                throw ValidationError("the library tap's debit failed: \(report.error.map { "\($0)" } ?? "no answer")")
            }
            try await connection.card.disconnect(.leave)
            result.library.append(elapsedSeconds(since: start) * 1000)
        }
        result.libraryAPDUs = Double(try box.emulatorAPDUs() - before) / Double(max(1, count))
        await context.shutdown()
        return result
    }
}

// MARK: - The box

/// A terminal box for the bench: cardemu with an issued, loaded card on its vpcd reader, a card office keystore and
/// the terminal's export of it, a blacklist file, and cardd processes started on stores prepared here. As
/// Tests/TestSupport/DaemonHarness.swift, but with the executables next to cardbench.
final class DaemonBox: @unchecked Sendable {
    let work: String
    let port: UInt16
    let readerName: String
    let binDirectory: String
    let emulatorSocket: String
    let officeKeystore: String
    let terminalKeystore: String
    let blacklistFile: String
    private let emulatorProcess = Process()
    private var loaded = Fen(0)
    private(set) var daemonLog = "(no cardd run)"
    static let cardUID = "04A1B2C3"

    #if DEBUG
    static let buildKind = "debug (figures of a release build are the ones to quote: swift build -c release)"
    #else
    static let buildKind = "release"
    #endif

    private init(work: String, port: UInt16) throws {
        self.work = work
        self.port = port
        readerName = VPCDLink.readerName(port: port)
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        binDirectory = URL(fileURLWithPath: exe).deletingLastPathComponent().path
        emulatorSocket = work + "/emu.sock"
        officeKeystore = work + "/office.json"
        terminalKeystore = work + "/terminal.json"
        blacklistFile = work + "/blacklist.csv"
        for name in ["cardd", "cardemu", "cardctl"] where !FileManager.default.isExecutableFile(atPath: binDirectory + "/" + name) {
            throw ValidationError("\(name) is not built next to cardbench in \(binDirectory): build it (swift build -c release --product \(name))")
        }
    }

    /// Starts cardemu with a blank card, issues and loads it through cardctl (as the card office would).
    static func make(base: String, port: UInt16) async throws -> DaemonBox {
        let box = try DaemonBox(work: base, port: port)
        let context: PCSCContext
        do { context = try await PCSCContext.establish() } catch {
            throw ValidationError("pcscd does not answer (\(error)): run through scripts/bench-daemon, which starts one in a private namespace")
        }
        await context.shutdown()
        var image = [UInt8](repeating: 0, count: 1024)
        let uid: [UInt8] = [0x04, 0xA1, 0xB2, 0xC3]
        image.replaceSubrange(0..<8, with: uid + [uid.reduce(0, ^), 0x08, 0x04, 0x00])
        for sector in 0..<16 { image.replaceSubrange((sector * 4 + 3) * 16..<(sector * 4 + 4) * 16, with: SectorTrailer.transport.block) }
        let blank = base + "/blank.mfd"
        guard FileManager.default.createFile(atPath: blank, contents: Data(image)) else { throw ValidationError("cannot write \(blank)") }
        box.emulatorProcess.executableURL = URL(fileURLWithPath: box.binDirectory + "/cardemu")
        box.emulatorProcess.arguments = ["--port", String(port), "--profile", "acr122u", "--card", blank, "--control", box.emulatorSocket]
        box.emulatorProcess.standardOutput = FileHandle.nullDevice
        box.emulatorProcess.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try box.emulatorProcess.run()
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: box.emulatorSocket) { try await Task.sleep(for: .milliseconds(50)) }
        try await box.waitForCard(present: true)
        try box.cardctl(["keystore", "create", box.officeKeystore])
        try box.cardctl(["keystore", "export", box.officeKeystore, box.terminalKeystore])
        try box.cardctl(["card", "issue", "--serial", "20260001", "--account", "3120456", "--type", "student"] + box.office)
        try await box.topUp(toAtLeast: Fen(10_000))
        try "version,serial,uid,action,reason\n1,99999999,0A0B0C0D,add,reported lost\n".write(toFile: box.blacklistFile, atomically: true, encoding: .utf8)
        try box.emulator("remove")
        try await box.waitForCard(present: false)
        return box
    }

    private var office: [String] { ["--keystore", officeKeystore, "--journal", work + "/office-journal.jsonl", "--terminal-id", "1"] }

    /// Loads the card (100.00 a load) until it was loaded with at least `amount` in all (a window run needs 0.01 a tap).
    func topUp(toAtLeast amount: Fen) async throws {
        guard loaded < amount else { return }
        let present = try emulatorStatus().cardPresent
        if !present {
            try emulator("insert")
            try await waitForCard(present: true)
        }
        while loaded < amount {
            try cardctl(["card", "load", "100"] + office)
            loaded = loaded + Fen(10_000)
        }
        if !present {
            try emulator("remove")
            try await waitForCard(present: false)
        }
    }

    @discardableResult
    func cardctl(_ arguments: [String]) throws -> String {
        let result = Self.run(binDirectory + "/cardctl", arguments)
        guard result.status == 0 else { throw ValidationError("cardctl \(arguments.prefix(3).joined(separator: " ")) failed (\(result.status)): \(result.output)") }
        return result.output
    }

    /// One request to cardemu's control socket; an "error" answer throws.
    @discardableResult
    func emulator(_ request: String) throws -> String {
        let answer = try ControlClient.send(request, to: emulatorSocket)
        guard answer.hasPrefix("ok") else { throw ValidationError("cardemu \(request): \(answer)") }
        return answer
    }

    func emulatorStatus() throws -> ControlServer.Status {
        let answer = try emulator("status --json")
        return try JSONDecoder().decode(ControlServer.Status.self, from: Data(answer.dropFirst(3).utf8))
    }

    func emulatorAPDUs() throws -> Int { try emulatorStatus().apdus }

    /// Waits until pcscd reports the card present (a connect succeeds) or absent.
    func waitForCard(present: Bool) async throws {
        let context = try await PCSCContext.establish()
        var seen = false
        for _ in 0..<100 where !seen {
            if let card = try? await context.connect(reader: readerName) {
                try? await card.disconnect(.leave)
                seen = present
            } else {
                seen = !present
            }
            if !seen { try await Task.sleep(for: .milliseconds(50)) }
        }
        await context.shutdown()
        if seen { return }
        throw ValidationError("pcscd did not see the card \(present ? "arrive on" : "leave") \(readerName) within 5 s")
    }

    /// A new store for `terminalID`: the blacklist imported (cardctl, as at installation), then `records` decided,
    /// uploaded and acknowledged purse debits of 20,000 other cards (as on a terminal that is online: the upload queue
    /// stays empty), one a second up to now. Written as rows in one INSERT (TerminalStore.importEntries checks each
    /// entry and takes ~5 min for 1M): the store's triggers keep its card counters and queue totals all the same.
    func prepareStore(_ path: String, records: Int, terminalID: UInt16) throws {
        StoreBench.remove(path)
        try cardctl(["blacklist", "import", blacklistFile, "--journal", path])
        guard records > 0 else { return }
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK, let db else { throw ValidationError("cannot open \(path)") }
        defer { sqlite3_close(db) }
        let now = Date().timeIntervalSinceReferenceDate
        // The UIDs as StoreBench.uid: Knuth's multiplicative hash of (index mod 20,000); never the bench card's.
        let sql = """
            BEGIN IMMEDIATE;
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(records))
            INSERT INTO journalEntry (sequence, terminalID, kind, wallet, cardUID, amountFen, balanceBeforeFen, counterBefore,
                recordBefore, createdAt, outcome, balanceAfterFen, counterAfter, decidedAt, upload, sentAt, acknowledgedAt)
            SELECT i, \(terminalID), 'purse-debit', 'purse',
                (SELECT CASE WHEN u = '\(Self.cardUID)' THEN 'FFFFFFFF' ELSE u END FROM (SELECT printf('%08X', ((i % 20000) * 2654435761) % 4294967296) AS u)),
                350, 10000, 5, '\(String(repeating: "5A", count: 16))', \(now) - (\(records) - i), 'done', 9650, i / 20000 + 6,
                \(now) - (\(records) - i) + 0.5, 'acknowledged', \(now), \(now)
            FROM n;
            UPDATE sequenceCounter SET lastIssued = MAX(lastIssued, \(records)) WHERE id = 1;
            COMMIT;
            """
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw ValidationError("prefill of \(path): \(String(cString: sqlite3_errmsg(db)))") }
    }

    /// Starts cardd on `store` and waits until it is ready; subscribes to its events.
    func startDaemon(store: String, terminalID: UInt16, window: Bool = false) throws -> RunningDaemon {
        let config = work + "/cardd-\(terminalID).json"
        var settings: [String: Any] = [
            "terminalID": Int(terminalID), "mode": "pos", "keystore": terminalKeystore, "stateDirectory": work,
            "store": ["path": store], "control": ["socket": work + "/cardd.sock"], "reader": readerName,
            // Thousands of unsent sales on one card in minutes: the offline limits would (rightly) stop the run.
            "offline": ["maxDebit": NSNull(), "maxUnsentCount": NSNull(), "maxUnsentTotal": NSNull(), "maxUnsentAgeHours": NSNull(), "maxBlacklistAgeHours": NSNull()],
        ]
        if window { settings["pos"] = ["windows": [["name": "bench", "start": "00:00", "end": "24:00", "price": "0.01"]]] }
        try JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys, .prettyPrinted]).write(to: URL(fileURLWithPath: config))
        daemonLog = work + "/cardd-\(terminalID).log"
        return try RunningDaemon(executable: binDirectory + "/cardd", config: config, socket: work + "/cardd.sock", log: daemonLog)
    }

    func cleanUp() {
        if emulatorProcess.isRunning {
            emulatorProcess.terminate()
            emulatorProcess.waitUntilExit()
        }
    }

    static func fileBytes(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }

    /// Runs a program to completion; stdout and stderr together.
    static func run(_ executable: String, _ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return (127, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

// MARK: - cardd

/// One measured tap, in ms: insert -> card-arrived, card-arrived -> result, insert -> result.
struct TapTimes {
    var detect: Double
    var work: Double
    var total: Double
}

/// A cardd process, its events stream (read on a thread of its own, each line stamped when it arrived) and a
/// command connection.
final class RunningDaemon: @unchecked Sendable {
    let process = Process()
    let events: EventReader
    let commands: ControlSocketClient
    let socket: String
    private var saleNumber = 0

    init(executable: String, config: String, socket: String, log: String) throws {
        self.socket = socket
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--config", config]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while true {
            guard process.isRunning else { throw ValidationError("cardd exited with \(process.terminationStatus): see \(log)") }
            if ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("cardd: ready") { break }
            guard Date() < deadline else { throw ValidationError("cardd did not become ready within 20 s: see \(log)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        events = try EventReader(socket: socket)
        commands = try ControlSocketClient(path: socket)
    }

    /// `count` sales of 0.01: arm, insert the card, wait for card-arrived and sale-done, remove it, wait for card-left.
    func runSales(_ count: Int, box: DaemonBox) throws -> [TapTimes] {
        var taps: [TapTimes] = []
        for _ in 0..<count {
            saleNumber += 1
            let saleID = "bench-\(saleNumber)"
            let answer = try commands.request(["command": "arm", "amount": "0.01", "saleID": saleID])
            guard let line = answer.last, let object = try JSONSerialization.jsonObject(with: line) as? [String: Any], object["ok"] as? Bool == true else {
                throw ValidationError("arm was refused: \(answer.map { String(decoding: $0, as: UTF8.self) })")
            }
            taps.append(try tap(expect: "sale-done", saleID: saleID, box: box))
        }
        return taps
    }

    /// One card presence: insert, wait for `expect` (for `saleID` when given), remove, wait until cardd saw it leave.
    func tap(expect: String, saleID: String? = nil, box: DaemonBox) throws -> TapTimes {
        let start = ContinuousClock.now
        try box.emulator("insert")
        let arrived = try events.next(timeout: 10) { $0.name == "card-arrived" }
        let result = try events.next(timeout: 20) { event in
            event.name != "card-arrived" && event.name != "sale-armed" && (saleID == nil || event.saleID == saleID || event.name == "card-refused")
        }
        guard result.name == expect else { throw ValidationError("expected \(expect), cardd sent: \(result.line)") }
        try box.emulator("remove")
        _ = try events.next(timeout: 10) { $0.name == "card-left" }
        return TapTimes(detect: Self.ms(arrived.at - start), work: Self.ms(result.at - arrived.at), total: Self.ms(result.at - start))
    }

    static func ms(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    /// /proc/PID/status and /proc/PID/fd: resident memory (MiB), its peak, the anonymous part, open descriptors, threads.
    func memory() throws -> (rss: Double, hwm: Double, anon: Double, file: Double, pss: Double, fds: Int, threads: Int) {
        let pid = process.processIdentifier
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        // smaps_rollup: the proportional set (shared library pages divided among the processes mapping them).
        let rollup = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
        func field(_ name: String, in text: String) -> Double {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0
        }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        return (field("VmRSS", in: status) / 1024, field("VmHWM", in: status) / 1024, field("RssAnon", in: status) / 1024,
                field("RssFile", in: status) / 1024, field("Pss", in: rollup) / 1024, fds, Int(field("Threads", in: status)))
    }

    /// SIGTERM and wait (20 s, then SIGKILL: reported).
    func stop() throws {
        process.terminate()
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        events.close()
        commands.close()
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw ValidationError("cardd did not stop within 20 s of SIGTERM")
        }
        guard process.terminationStatus == 0 else { throw ValidationError("cardd exited with \(process.terminationStatus) on SIGTERM") }
    }
}

/// The `events` stream of a cardd, read on its own thread; each line stamped with the monotonic clock on arrival.
final class EventReader: @unchecked Sendable {
    struct Event {
        var name: String
        var saleID: String?
        var at: ContinuousClock.Instant
        var line: String
    }

    private let client: ControlSocketClient
    private let condition = NSCondition()
    private var queue: [Event] = []
    private var ended: String?

    init(socket: String) throws {
        client = try ControlSocketClient(path: socket)
        try client.send(["command": "events"])
        guard let first = try client.readLine(), String(decoding: first, as: UTF8.self).contains("\"ok\"") else {
            throw ValidationError("cardd refused the events stream")
        }
        let thread = Thread { [self] in readLoop() }
        thread.start()
    }

    private func readLoop() {
        while true {
            do {
                guard let data = try client.readLine(timeout: .seconds(86_400)) else { return finish("cardd closed the events stream") }
                let at = ContinuousClock.now
                let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
                let event = Event(name: object["event"] as? String ?? "?", saleID: object["saleID"] as? String, at: at,
                                  line: String(decoding: data, as: UTF8.self))
                condition.withLock {
                    queue.append(event)
                    condition.broadcast()
                }
            } catch {
                return finish("\(error)")
            }
        }
    }

    private func finish(_ why: String) {
        condition.withLock {
            ended = why
            condition.broadcast()
        }
    }

    /// The next event matching `predicate`; the ones before it are dropped.
    func next(timeout seconds: TimeInterval, _ predicate: (Event) -> Bool) throws -> Event {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while true {
            while !queue.isEmpty {
                let event = queue.removeFirst()
                if predicate(event) { return event }
            }
            if let ended { throw ValidationError("the events stream ended: \(ended)") }
            guard condition.wait(until: deadline) else { throw ValidationError("no matching event from cardd within \(Int(seconds)) s") }
        }
    }

    func close() { client.close() }
}
