import CampusCard
import CardDaemon
import Foundation
import Logging
import SettlementClient
import SettlementCore
import TerminalStore

/// What one uplink pass did, for `cardctl daemon sync` and the log.
struct SyncReport: Sendable, Codable {
    var ok: Bool
    /// Records sent in this pass, and how many of them the service acknowledged (accepted or duplicate).
    var sent = 0
    var acknowledged = 0
    /// Records the service refused as conflicting with what it already holds under that key: they stay queued and
    /// are shown here until an operator resolves them.
    var conflicts: [UInt32] = []
    var blacklistVersion: Int64?
    var blacklistChanges = 0
    var parametersVersion: Int64?
    /// The service's clock minus ours, whole seconds (positive: ours is behind).
    var clockSkewSeconds: Int?
    var error: String?
}

/// The uplink's state, for `daemon status`.
struct UplinkStatus: Sendable, Codable {
    var url: String
    var state: String
    var lastAttemptAt: Date?
    var lastSuccessAt: Date?
    var lastError: String?
    var nextAttemptAt: Date?
    var failuresInARow: Int
    var acknowledgedSinceStart: Int
    var conflicts: [UInt32]
    var clockSkewSeconds: Int?
    var parametersVersion: Int64?
}

/// Store-and-forward to the settlement service: uploads every decided record in sequence order, marks a record
/// acknowledged only after the service acknowledged that record, pulls the blacklist's deltas and the terminal
/// parameters, and measures the clock. Passes run at the configured interval, at once when nudged (a sale, a limit
/// reached, `cardctl daemon sync`), and after failures with exponential backoff and jitter. A pass cut short (kill,
/// network) leaves records `sent`: the next pass sends them again and the service answers with the original
/// acknowledgements, so nothing is counted twice.
actor Uplink {
    let configuration: DaemonConfig.Uplink
    let store: TerminalStore
    nonisolated let client: SettlementClient
    let logger: Logger
    /// Called after a pass changed what the offline policy sees (acknowledgements, blacklist, parameters).
    private let changed: @Sendable (TerminalParameters?) async -> Void
    private var schedule: UplinkSchedule
    private var status: UplinkStatus
    private var wakeup: CheckedContinuation<Void, Never>?
    private var nudged = false
    /// `daemon sync` callers waiting for the next pass to start, then for it to end.
    private var waitingForNext: [CheckedContinuation<SyncReport, Never>] = []
    private var waitingForThis: [CheckedContinuation<SyncReport, Never>] = []
    private var stopped = false

    init(configuration: DaemonConfig.Uplink, terminalID: UInt16, store: TerminalStore, logger: Logger,
         changed: @escaping @Sendable (TerminalParameters?) async -> Void) throws {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        self.changed = changed
        let secret = try Self.readSecret(configuration.secretFile)
        do {
            client = try SettlementClient(baseURL: configuration.url, key: .terminal(terminalID), secret: secret,
                                          timeout: .seconds(Int64(configuration.timeout)))
        } catch {
            throw UplinkSetupError("uplink.url: \(error)")
        }
        schedule = UplinkSchedule(interval: .seconds(Int64(configuration.interval)), maxBackoff: .seconds(Int64(configuration.maxBackoff)))
        status = UplinkStatus(url: configuration.url, state: "starting", failuresInARow: 0, acknowledgedSinceStart: 0, conflicts: [])
    }

    struct UplinkSetupError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// The secret file: hex, not readable by others (it signs this terminal's money records).
    static func readSecret(_ path: String) throws -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0, let data = FileManager.default.contents(atPath: path) else {
            throw UplinkSetupError("uplink.secretFile: cannot read \(path): put this terminal's secret there (`cardctl office terminal-add` prints it once), mode 0640 root:onecard")
        }
        guard info.st_mode & 0o007 == 0 else {
            throw UplinkSetupError("uplink.secretFile: \(path) is readable by others (mode \(String(info.st_mode & 0o777, radix: 8))): chmod 0640 it, and have the office issue a new secret if it leaked")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count >= 32, text.count % 2 == 0, text.allSatisfy(\.isHexDigit) else {
            throw UplinkSetupError("uplink.secretFile: \(path) does not hold a hex secret of at least 16 bytes: copy the secret the office issued")
        }
        return stride(from: 0, to: text.count, by: 2).map { offset in
            UInt8(text.dropFirst(offset).prefix(2), radix: 16)!
        }
    }

    func currentStatus() -> UplinkStatus { status }

    /// Starts a pass soon (the loop's sleep ends).
    func nudge() {
        nudged = true
        wakeup?.resume()
        wakeup = nil
    }

    /// Starts a pass and waits for its report.
    func syncNow() async -> SyncReport {
        if stopped { return SyncReport(ok: false, error: "cardd is stopping: no pass runs") }
        return await withCheckedContinuation { continuation in
            waitingForNext.append(continuation)
            nudge()
        }
    }

    /// The loop: one pass, then a sleep the schedule decides; ends when its task is cancelled.
    func run() async {
        while !Task.isCancelled {
            nudged = false
            waitingForThis = waitingForNext
            waitingForNext = []
            let report = await pass()
            for waiter in waitingForThis { waiter.resume(returning: report) }
            waitingForThis = []
            let delay = report.ok ? schedule.succeeded() : schedule.failed(jitter: Double.random(in: 0...1))
            status.failuresInARow = schedule.failures
            status.nextAttemptAt = Date().addingTimeInterval(Double(delay.components.seconds))
            status.state = report.ok ? "idle" : "backoff"
            if !nudged || !report.ok && waitingForNext.isEmpty { await sleep(delay) }
        }
        stopped = true
        let report = SyncReport(ok: false, error: "cardd is stopping: no pass runs")
        for waiter in waitingForNext + waitingForThis { waiter.resume(returning: report) }
        waitingForNext = []
        await client.shutdown()
    }

    /// Sleeps `delay`, or until nudged or cancelled.
    private func sleep(_ delay: Duration) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(for: delay)
            await self?.nudge()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if nudged || Task.isCancelled { continuation.resume() } else { wakeup = continuation }
            }
        } onCancel: {
            Task { await self.nudge() }
        }
        timer.cancel()
    }

    /// One pass: upload, blacklist, parameters, clock. The first failure ends it (the records stay queued).
    private func pass() async -> SyncReport {
        var report = SyncReport(ok: true)
        status.state = "syncing"
        status.lastAttemptAt = Date()
        do {
            try await upload(&report)
            try await pullBlacklist(&report)
            let parameters = try await pullParameters(&report)
            try await measureClock(&report)
            await changed(parameters)
            status.lastSuccessAt = Date()
            status.lastError = nil
        } catch {
            report.ok = false
            report.error = "\(error)"
            status.lastError = report.error
            logger.warning("uplink pass failed", metadata: ["error": "\(error)", "sent": "\(report.sent)", "acknowledged": "\(report.acknowledged)"])
            if report.acknowledged > 0 { await changed(nil) }
        }
        status.conflicts = report.conflicts
        return report
    }

    private func upload(_ report: inout SyncReport) async throws {
        var after: UInt32 = 0
        while !Task.isCancelled {
            let batch = try store.pendingUpload(limit: configuration.batchSize, after: after)
            guard let last = batch.last else { break }
            let records = batch.compactMap { TerminalRecord(intent: $0.intent, outcome: $0.outcome) }
            let sequences = records.map(\.terminalSequence)
            try store.markSent(sequences)
            report.sent += records.count
            let acks = try await client.upload(records)
            let acknowledged = acks.filter(\.acknowledges).map(\.terminalSequence)
            try store.markAcknowledged(acknowledged)
            report.acknowledged += acknowledged.count
            status.acknowledgedSinceStart += acknowledged.count
            for ack in acks where !ack.acknowledges {
                report.conflicts.append(ack.terminalSequence)
                logger.error("the settlement service holds a different record under this terminal's sequence: it stays queued for an operator",
                             metadata: ["sequence": "\(ack.terminalSequence)", "flags": "\(ack.flags.joined(separator: ","))"])
            }
            after = last.intent.terminalSequence
        }
    }

    private func pullBlacklist(_ report: inout SyncReport) async throws {
        var version = try store.blacklistStatus().version
        while !Task.isCancelled {
            let page = try await client.blacklist(after: version)
            let changes = page.changes.map {
                BlacklistChange(serial: $0.serial, uid: $0.uid, action: $0.action == .add ? .add : .remove, reason: $0.reason)
            }
            // Also when empty: applying stamps the list fresh (the offline policy's blacklist age).
            try store.applyBlacklist(changes, version: max(page.version, version))
            report.blacklistChanges += changes.count
            version = max(page.version, version)
            if !page.more || page.changes.isEmpty { break }
        }
        report.blacklistVersion = version
    }

    private func pullParameters(_ report: inout SyncReport) async throws -> TerminalParameters? {
        let parameters = try await client.parameters()
        if try store.savedParameters()?.version != parameters.version {
            let json = String(decoding: try SettlementJSON.encoder().encode(parameters), as: UTF8.self)
            try store.saveParameters(version: parameters.version, json: json)
            logger.notice("terminal parameters updated", metadata: ["version": "\(parameters.version)"])
        }
        report.parametersVersion = parameters.version
        status.parametersVersion = parameters.version
        return parameters
    }

    private func measureClock(_ report: inout SyncReport) async throws {
        let sentAt = Date()
        let serverTime = try await client.time()
        let receivedAt = Date()
        let ours = sentAt.addingTimeInterval(receivedAt.timeIntervalSince(sentAt) / 2)
        let skew = Int(serverTime.timeIntervalSince(ours).rounded())
        report.clockSkewSeconds = skew
        if abs(skew) > 60, status.clockSkewSeconds.map({ abs($0) <= 60 }) ?? true {
            logger.warning("this box's clock is \(abs(skew)) s \(skew > 0 ? "behind" : "ahead of") the settlement service's: set it (NTP); records carry the box's time")
        }
        status.clockSkewSeconds = skew
    }
}
