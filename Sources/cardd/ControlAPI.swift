import BuildInfo
import CampusCard
import CardDaemon
import DaemonSupport
import Foundation
import TerminalStore

/// The control API's commands (docs/control-api.md): one JSON object a line in, JSON lines out. Every answer's last
/// line has `"ok"`; a stream (`events`, `charge`) sends event lines first. Bad requests get an error line.
struct ControlAPI: Sendable {
    let daemon: Daemon

    struct Status: Encodable {
        var ok = true
        var version: String
        var commit: String
        var mode: String
        var terminalID: UInt16
        var reader: String?
        var pcscd: String
        var card: String?
        var openSale: String?
        var queue: Queue
        var blacklist: Blacklist
        var lastTap: LastTap?
        var valve: String?
        var fault: String?
        var taps: Int
        /// `nil`: an offline-only box (no `uplink.url`).
        var uplink: UplinkStatus?

        struct Queue: Encodable {
            var unacknowledged: Int
            var unacknowledgedDebitsYuan: String
            var oldestUnacknowledged: Date?
            var openIntents: Int
        }
        struct Blacklist: Encodable {
            var version: Int64
            var updatedAt: Date?
            var ageSeconds: Int?
            var entries: Int
        }
    }

    struct Version: Encodable {
        var ok = true
        var version: String
        var commit: String
    }

    struct Ack: Encodable {
        var ok = true
        var saleID: String?
        var message: String?
    }

    struct SaleArguments: Decodable {
        var amount: String
        var saleID: String?
        /// Whole seconds (a sale waits at most an hour).
        var timeoutSeconds: Int?
    }
    struct SaleID: Decodable { var saleID: String }
    struct PINArguments: Decodable {
        var saleID: String
        var pin: String
    }
    struct PulseArguments: Decodable { var count: Int }

    func handle(_ request: ControlRequest) async -> AsyncStream<ControlResponseLine> {
        do throws(ControlErrorBody) {
            switch request.command {
            case "status": return .single(ControlResponseLine(try await status()))
            case "version": return .single(ControlResponseLine(Version(version: BuildInfo.version, commit: BuildInfo.commit)))
            case "events": return await events()
            case "arm": return await arm(try request.decode(SaleArguments.self), waiting: false)
            case "charge": return await arm(try request.decode(SaleArguments.self), waiting: true)
            case "load": return await arm(try request.decode(SaleArguments.self), waiting: true, load: true)
            case "cancel":
                let arguments = try request.decode(SaleID.self)
                try await requirePOS(load: nil)
                if let rejection = await daemon.cancel(saleID: arguments.saleID) { throw ControlErrorBody(rejection) }
                return .single(ControlResponseLine(Ack(saleID: arguments.saleID)))
            case "pin":
                let arguments = try request.decode(PINArguments.self)
                try await requirePOS()
                let pin: PIN
                do { pin = try PIN(arguments.pin) } catch {
                    throw ControlErrorBody(code: .badArguments, message: "the PIN is not usable (\(error)): 6 digits")
                }
                if let rejection = await daemon.pin(saleID: arguments.saleID, pin) { throw ControlErrorBody(rejection) }
                return .single(ControlResponseLine(Ack(saleID: arguments.saleID)))
            case "water-pulses":
                let arguments = try request.decode(PulseArguments.self)
                guard (1...100_000).contains(arguments.count) else {
                    throw ControlErrorBody(code: .badArguments, message: "count \(arguments.count) is out of range: 1-100000 pulses")
                }
                guard await daemon.injectPulses(arguments.count) else {
                    throw ControlErrorBody(code: .badRequest, message: "this daemon's flow meter is not the simulated one: pulses come from the meter")
                }
                return .single(ControlResponseLine(Ack(message: "\(arguments.count) pulses counted")))
            case "sync":
                guard let uplink = await daemon.uplink else {
                    throw ControlErrorBody(code: .badRequest, message: "this terminal has no settlement service configured (uplink.url): its records wait in the store; see docs/cardd-config.md")
                }
                let report = await uplink.syncNow()
                if !report.ok {
                    throw ControlErrorBody(code: ControlErrorCode(rawValue: "sync-failed"), message: "the sync failed: \(report.error ?? "unknown error"); \(report.acknowledged) of \(report.sent) records sent were acknowledged, the rest stay queued")
                }
                return .single(ControlResponseLine(report))
            case "clear-fault":
                await daemon.clearFault()
                return .single(ControlResponseLine(Ack(message: "fault cleared")))
            default:
                throw ControlErrorBody(code: .unknownCommand, message: "unknown command \"\(request.command)\": use status, version, events, arm, charge, load, cancel, pin, water-pulses, clear-fault or sync (docs/control-api.md)")
            }
        } catch {
            return .single(ControlResponseLine(error: error))
        }
    }

    /// Sales (arm, charge, pin) need a POS, loads a load station; cancel works on both.
    private func requirePOS(load: Bool? = false) async throws(ControlErrorBody) {
        let mode = daemon.config.mode
        switch load {
        case false?: guard mode == .pos else {
            throw ControlErrorBody(code: .badRequest, message: "this terminal is in \(mode.rawValue) mode: sales need a POS (mode \"pos\")\(mode == .load ? "; a load station takes `load`" : "")")
        }
        case true?: guard mode == .load else {
            throw ControlErrorBody(code: .badRequest, message: "this terminal is in \(mode.rawValue) mode: loads need a load station (mode \"load\", online)")
        }
        case nil: guard mode == .pos || mode == .load else {
            throw ControlErrorBody(code: .badRequest, message: "this terminal is in \(mode.rawValue) mode: it has no sales or loads to cancel")
        }
        }
    }

    func status() async throws(ControlErrorBody) -> Status {
        let store = daemon.store
        let queue: UploadQueueSummary
        let blacklist: BlacklistStatus
        do {
            queue = try store.queueSummary()
            blacklist = try store.blacklistStatus()
        } catch {
            throw ControlErrorBody(code: .internalError, message: "cannot read the terminal store: \(error)")
        }
        let now = Date()
        return Status(
            version: BuildInfo.version, commit: BuildInfo.commit, mode: daemon.config.mode.rawValue,
            terminalID: daemon.config.terminalID, reader: await daemon.readerName,
            pcscd: await daemon.pcscdUp ? "up" : "unreachable", card: await daemon.cardUID, openSale: await daemon.openSaleID,
            queue: Status.Queue(unacknowledged: queue.unacknowledged, unacknowledgedDebitsYuan: queue.unacknowledgedDebits.yuan,
                                oldestUnacknowledged: queue.oldestUnacknowledgedAt, openIntents: queue.openIntents),
            blacklist: Status.Blacklist(version: blacklist.version, updatedAt: blacklist.updatedAt,
                                        ageSeconds: blacklist.updatedAt.map { Int(now.timeIntervalSince($0)) }, entries: blacklist.count),
            lastTap: await daemon.lastTap, valve: await daemon.valveOpen.map { $0 ? "open" : "closed" }, fault: await daemon.latchedFault,
            taps: await daemon.taps, uplink: await daemon.uplink?.currentStatus())
    }

    private func events() async -> AsyncStream<ControlResponseLine> {
        let (id, stream) = await daemon.subscribe()
        let daemon = daemon
        return AsyncStream { continuation in
            let task = Task {
                continuation.yield(ControlResponseLine(Ack(message: "streaming events")))
                for await line in stream { continuation.yield(ControlResponseLine(line)) }
                continuation.finish()
            }
            continuation.onTermination = { _ in
                task.cancel()
                Task { await daemon.unsubscribe(id) }
            }
        }
    }

    /// Arms a sale; `waiting`: streams the sale's events and ends with its result (`charge`).
    private func arm(_ arguments: SaleArguments, waiting: Bool, load: Bool = false) async -> AsyncStream<ControlResponseLine> {
        do throws(ControlErrorBody) {
            try await requirePOS(load: load)
            let amount: Fen
            do { amount = try Fen(yuan: arguments.amount) } catch {
                throw ControlErrorBody(code: .badArguments, message: "amount: \(error)")
            }
            guard amount > .zero else { throw ControlErrorBody(code: .badArguments, message: "amount: a sale is more than 0.00 yuan") }
            if let timeout = arguments.timeoutSeconds, !(1...3600).contains(timeout) {
                throw ControlErrorBody(code: .badArguments, message: "timeoutSeconds \(timeout) is out of range: 1-3600")
            }
            if let saleID = arguments.saleID, saleID.isEmpty || saleID.count > 64 {
                throw ControlErrorBody(code: .badArguments, message: "saleID must be 1-64 characters")
            }
            let saleID = arguments.saleID ?? UUID().uuidString.lowercased()
            let (id, stream) = await daemon.subscribe()
            let daemon = daemon
            // The rejection of this request is this client's alone: an open sale of another client with the same id
            // must not end on it (it still waits for its card and its result).
            if let rejection = await daemon.arm(saleID: saleID, amount: amount, timeout: arguments.timeoutSeconds.map(TimeInterval.init)) {
                await daemon.unsubscribe(id)
                return AsyncStream { continuation in
                    if waiting { continuation.yield(ControlResponseLine(rejection.line)) }
                    continuation.yield(ControlResponseLine(SaleEnd(ok: false, saleID: saleID, result: rejection.line.event)))
                    continuation.finish()
                }
            }
            let ended = OnceFlag()
            return AsyncStream { continuation in
                let task = Task {
                    for await line in stream {
                        let mine = line.saleID == saleID || (line.saleIDs ?? []).contains(saleID)
                        if waiting, mine, line.event != "request-rejected" { continuation.yield(ControlResponseLine(line)) }
                        if line.event == "sale-armed", line.saleID == saleID, !waiting {
                            continuation.yield(ControlResponseLine(Ack(saleID: saleID, message: "armed: present the card")))
                            ended.set()
                            break
                        }
                        if line.ends(sale: saleID) {
                            let ok = line.event == "sale-done"
                            ended.set()
                            continuation.yield(ControlResponseLine(SaleEnd(ok: ok, saleID: saleID, result: line.event)))
                            break
                        }
                    }
                    continuation.finish()
                }
                continuation.onTermination = { _ in
                    task.cancel()
                    Task {
                        await daemon.unsubscribe(id)
                        // `charge`'s client left before its sale ended: nobody would hear the result.
                        if waiting, !ended.isSet { await daemon.abandon(saleID: saleID) }
                    }
                }
            }
        } catch {
            return .single(ControlResponseLine(error: error))
        }
    }

    struct SaleEnd: Encodable {
        var ok: Bool
        var saleID: String
        var result: String
    }
}

extension AsyncStream where Element == ControlResponseLine {
    static func single(_ line: ControlResponseLine) -> AsyncStream<ControlResponseLine> {
        AsyncStream { continuation in
            continuation.yield(line)
            continuation.finish()
        }
    }
}

/// A one-way flag shared between a stream's task and its termination handler.
final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

extension ControlErrorBody {
    /// A POS request the machine did not take, told to its sender: the rejection's code leads the message.
    init(_ rejection: Daemon.Rejection) {
        self.init(code: .badRequest, message: "\(rejection.code.rawValue): \(rejection.message)")
    }
}
