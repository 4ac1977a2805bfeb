import ArgumentParser
import CampusCard
import DaemonSupport
import Foundation

/// Where the daemon's control socket is: --socket, else $ONECARD_SOCKET, else the systemd unit's path.
struct SocketOptions: ParsableArguments {
    @Option(help: "The daemon's control socket (default: $ONECARD_SOCKET, else /run/onecard/cardd.sock).")
    var socket: String?

    @Flag(name: .long, help: "Print the daemon's answer lines as JSON.")
    var json = false

    var path: String { socket ?? ProcessInfo.processInfo.environment["ONECARD_SOCKET"] ?? "/run/onecard/cardd.sock" }

    func connect() throws -> ControlSocketClient {
        do {
            return try ControlSocketClient(path: path)
        } catch {
            throw CLIError(.noReader, "cannot reach cardd: \(error) If it listens elsewhere, give its socket with --socket.")
        }
    }
}

/// One answer line as a dictionary (the control API's lines are JSON objects).
func decodeLine(_ data: Data) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
}

/// The daemon's error line as a CLI failure, else nil.
func daemonError(_ line: [String: Any]) -> CLIError? {
    guard let error = line["error"] as? [String: Any] else { return nil }
    let code = error["code"] as? String ?? "error"
    let message = error["message"] as? String ?? "the daemon refused the request"
    return CLIError(["internal", "sync-failed"].contains(code) ? .failed : .badInput, "cardd: \(code): \(message)")
}

/// `cardctl daemon ...`: the terminal daemon's state.
struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Ask the terminal daemon (cardd) for its state and events.",
        subcommands: [Status.self, Events.self, Sync.self, ClearFault.self])

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mode, version, reader and card, queue, blacklist, last tap.")
        @OptionGroup var socket: SocketOptions

        func run() throws {
            try reportingFailuresSync {
                let client = try socket.connect()
                let lines = try client.request(["command": "status"])
                guard let data = lines.last else { throw CLIError(.failed, "cardd closed the connection without an answer") }
                let line = decodeLine(data)
                if let error = daemonError(line) { throw error }
                if socket.json { print(String(decoding: data, as: UTF8.self)); return }
                let queue = line["queue"] as? [String: Any] ?? [:]
                let blacklist = line["blacklist"] as? [String: Any] ?? [:]
                print("cardd \(line["version"] ?? "?") (commit \(line["commit"] ?? "?")): \(line["mode"] ?? "?") terminal \(line["terminalID"] ?? "?")")
                print("reader: \(line["reader"] as? String ?? "none seen yet") (pcscd \(line["pcscd"] ?? "?")), card: \(line["card"] as? String ?? "none")")
                print("queue: \(queue["unacknowledged"] ?? 0) unacknowledged (\(queue["unacknowledgedDebitsYuan"] ?? "0.00") yuan of purse debits), oldest \(queue["oldestUnacknowledged"] ?? "none"), \(queue["openIntents"] ?? 0) open intents")
                print("blacklist: version \(blacklist["version"] ?? 0), \(blacklist["entries"] ?? 0) entries, updated \(blacklist["updatedAt"] ?? "never")")
                if let sale = line["openSale"] { print("open sale: \(sale)") }
                if let valve = line["valve"] { print("valve: \(valve)") }
                if let fault = line["fault"] { print("fault: \(fault)") }
                if let last = line["lastTap"] as? [String: Any] { print("last tap: \(last["at"] ?? "?") card \(last["card"] ?? "?"): \(last["result"] ?? "?")") }
                if let uplink = line["uplink"] as? [String: Any] {
                    // Said of the last finished pass: while one runs ("syncing"), the service may already be gone,
                    // which only its end (a request timeout) shows.
                    let state = uplink["lastError"] == nil && uplink["lastSuccessAt"] != nil ? "online" : "offline"
                    let now = uplink["state"] as? String == "syncing" ? "syncing since \(uplink["lastAttemptAt"] ?? "?")" : "\(uplink["state"] ?? "?")"
                    print("uplink: \(uplink["url"] ?? "?") \(state) at the last pass (\(now)), last success \(uplink["lastSuccessAt"] ?? "never"), clock skew \(uplink["clockSkewSeconds"].map { "\($0) s" } ?? "unknown")")
                    if let error = uplink["lastError"] { print("uplink error: \(error)") }
                    if let conflicts = uplink["conflicts"] as? [Any], !conflicts.isEmpty { print("uplink conflicts (held for an operator): sequences \(conflicts.map { "\($0)" }.joined(separator: ", "))") }
                } else {
                    print("uplink: none configured (offline-only box)")
                }
            }
        }
    }

    struct ClearFault: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "clear-fault",
            abstract: "Clear a water controller's latched fault (a leak, a valve that failed) once it is repaired: the valve may open again.")
        @OptionGroup var socket: SocketOptions

        func run() throws {
            try reportingFailuresSync {
                let client = try socket.connect()
                let lines = try client.request(["command": "clear-fault"])
                if let data = lines.last, let error = daemonError(decodeLine(data)) { throw error }
                if !socket.json { print("fault cleared: the next card is served") }
            }
        }
    }

    struct Sync: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload the queue now, pull the blacklist and parameters, and print what the pass did.",
            discussion: "Exit status 0 when the pass completed; 1 when it failed (the records it did not get acknowledged stay queued).")
        @OptionGroup var socket: SocketOptions
        @Option(help: "Seconds to wait for the pass (a long backlog takes a while).") var timeout = 600

        func run() throws {
            try reportingFailuresSync {
                let client = try socket.connect()
                let lines = try client.request(["command": "sync"], timeout: .seconds(timeout))
                guard let data = lines.last else { throw CLIError(.failed, "cardd closed the connection without an answer") }
                let line = decodeLine(data)
                if let error = daemonError(line) { throw error }
                if socket.json { print(String(decoding: data, as: UTF8.self)); return }
                print("sent \(line["sent"] ?? 0), acknowledged \(line["acknowledged"] ?? 0)")
                if let conflicts = line["conflicts"] as? [Any], !conflicts.isEmpty {
                    print("conflicts (the service holds a different record under these sequences; they stay queued): \(conflicts.map { "\($0)" }.joined(separator: ", "))")
                }
                print("blacklist: version \(line["blacklistVersion"] ?? "?"), \(line["blacklistChanges"] ?? 0) changes")
                print("parameters: version \(line["parametersVersion"] ?? "?")")
                print("clock skew: \(line["clockSkewSeconds"].map { "\($0) s (the service's clock minus this box's)" } ?? "unknown")")
            }
        }
    }

    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the daemon's events as they happen (JSON lines), until interrupted.")
        @OptionGroup var socket: SocketOptions
        @Option(help: "Stop after this many events.") var count: Int?

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count must be 1 or more (leave it out to follow the events until interrupted)") }
        }

        func run() throws {
            try reportingFailuresSync {
                let client = try socket.connect()
                try client.send(["command": "events"])
                var seen = 0
                while let data = try client.readLine(timeout: .seconds(86_400)) {
                    let line = decodeLine(data)
                    if let error = daemonError(line) { throw error }
                    guard line["event"] != nil else { continue }
                    printNow(String(decoding: data, as: UTF8.self))
                    seen += 1
                    if let count, seen >= count { return }
                }
            }
        }
    }
}

/// `cardctl pos ...`: sales on a POS daemon.
struct PosCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pos",
        abstract: "Charge a sale on the POS daemon (cardd in pos mode), or load a card at a load station (mode load): the next card tapped pays it or is loaded.",
        discussion: "Exit status: 0 paid, 5 refused (the reason is printed), 7 undetermined (the card left during the commit: tap it again, the daemon decides it; or the daemon went away before the result: check `cardctl journal list` on its store before charging again), 3 timed out or cancelled (nothing debited), 2 no daemon, 6 a bad amount or request.",
        subcommands: [Charge.self, Load.self, PIN.self, Cancel.self])

    struct Charge: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Arm a sale and wait for the card: prints the result.")
        @OptionGroup var socket: SocketOptions
        @Argument(help: "The amount in yuan, e.g. 12.50.") var amount: String
        @Option(help: "Your own sale id (default: a new one).") var saleID: String?
        @Option(help: "Seconds to wait for a card (default: the daemon's sale timeout).") var timeout: Int?

        func run() throws {
            try armAndWait(command: "charge", socket: socket, amount: amount, saleID: saleID, timeout: timeout)
        }
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Arm an online load (圈存) on a load station (cardd in load mode) and wait for the card.",
            discussion: "The settlement service holds the amount from the holder's account, then the card is loaded. Exit status as for charge.")
        @OptionGroup var socket: SocketOptions
        @Argument(help: "The amount in yuan, e.g. 50.00.") var amount: String
        @Option(help: "Your own load id (default: a new one).") var loadID: String?
        @Option(help: "Seconds to wait for a card (default: the daemon's sale timeout).") var timeout: Int?

        func run() throws {
            try armAndWait(command: "load", socket: socket, amount: amount, saleID: loadID, timeout: timeout)
        }
    }

    /// Arms a sale (`charge`) or a load (`load`), follows its events and prints how it ended.
    static func armAndWait(command: String, socket: SocketOptions, amount: String, saleID: String?, timeout: Int?) throws {
        let isLoad = command == "load"
        try reportingFailuresSync {
            // A typing error is told at once, not after the daemon is reached (which checks it again).
            do { _ = try Fen(yuan: amount) } catch { throw CLIError(.badInput, "\(error)") }
            let client = try socket.connect()
            try client.send(ChargeRequest(command: command, amount: amount, saleID: saleID, timeoutSeconds: timeout))
            var final: [String: Any]?
            var ended: [String: Any]?
            // Asked for: from now on cardd may arm it and debit a card before its first line reaches us.
            var sale = saleID
            while let data = try readUnlessGone(client, sale: sale, isLoad: isLoad, timeout: timeout) {
                let line = decodeLine(data)
                if line["event"] as? String == "sale-armed", let id = line["saleID"] as? String { sale = id }
                if let error = daemonError(line) { throw error }
                if socket.json { printNow(String(decoding: data, as: UTF8.self)) }
                if line["event"] as? String == "pin-required" && !socket.json {
                    printError("cardctl: the card asks for the holder's PIN: `cardctl pos pin \(line["saleID"] ?? "SALE") --pin-stdin`\(line["pinTriesLeft"].map { " (\($0) tries left)" } ?? "")")
                }
                if line["ok"] != nil && line["event"] == nil { final = line; break }
                if let event = line["event"] as? String, event.hasPrefix("sale-") || event == "request-rejected" { ended = line }
            }
            guard let final, let result = final["result"] as? String else { throw goneDuring(sale, isLoad: isLoad) }
            let line = ended ?? [:]
            let nothing = isLoad ? "nothing was loaded" : "nothing was debited"
            switch result {
            case "sale-done":
                if !socket.json { print("\(isLoad ? "loaded" : "paid") \(line["amountYuan"] ?? amount) yuan: card \(line["card"] ?? "?"), balance \(line["balanceYuan"] ?? "?") yuan") }
            case "sale-refused":
                let reason = line["reason"] as? [String: Any] ?? [:]
                throw CLIError(.refused, "refused (\(reason["code"] ?? "?")): \(reason["message"] ?? line["message"] ?? "")")
            case "sale-undetermined":
                throw CLIError(.undetermined, "undetermined: \(line["message"] ?? "the card left during the commit") (tap the same card again on this \(isLoad ? "station" : "POS"), not a new \(isLoad ? "load" : "sale"))")
            case "sale-timed-out": throw CLIError(.noCard, "timed out: no card was presented; \(nothing)")
            case "sale-cancelled": throw CLIError(.noCard, "cancelled; \(nothing)")
            default:
                let reason = line["reason"] as? [String: Any] ?? [:]
                throw CLIError(.badInput, "the \(isLoad ? "load" : "sale") was not taken (\(reason["code"] ?? result)): \(line["message"] ?? "")")
            }
        }
    }

    /// The daemon's next line; a connection that breaks is the sale's end unheard.
    static func readUnlessGone(_ client: ControlSocketClient, sale: String?, isLoad: Bool, timeout: Int?) throws -> Data? {
        do {
            return try client.readLine(timeout: .seconds(Int64(timeout ?? 3600) + 60))
        } catch {
            throw goneDuring(sale, isLoad: isLoad)
        }
    }

    /// A sale asked for whose daemon went away before its result (killed, restarted, the box lost power): it may have
    /// been armed and a card debited, so its outcome is undetermined here; the daemon's journal tells once it is back.
    static func goneDuring(_ saleID: String?, isLoad: Bool) -> CLIError {
        let what = isLoad ? "load" : "sale"
        return CLIError(.undetermined, "undetermined: cardd went away during the \(what)\(saleID.map { " \($0)" } ?? ""), and the card may have been \(isLoad ? "loaded" : "debited"); when it is back, `cardctl journal list` on its store tells: do not \(isLoad ? "load" : "charge") again before checking")
    }

    struct ChargeRequest: Encodable {
        var command: String
        var amount: String
        var saleID: String?
        var timeoutSeconds: Int?
    }

    struct PIN: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send the holder's PIN for a sale that asked for it (read from stdin).")
        @OptionGroup var socket: SocketOptions
        @Argument(help: "The sale id.") var saleID: String
        @Flag(help: "Read the PIN from standard input (never from the command line).") var pinStdin = false

        func run() throws {
            try reportingFailuresSync {
                guard pinStdin else { throw CLIError(.badInput, "give the PIN on standard input with --pin-stdin (never on the command line)") }
                let pin = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespaces)
                let client = try socket.connect()
                let lines = try client.request(["command": "pin", "saleID": saleID, "pin": pin])
                if let data = lines.last, let error = daemonError(decodeLine(data)) { throw error }
                if !socket.json { print("PIN sent for sale \(saleID): the card is debited when it is on the reader") }
            }
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel an armed sale (nothing is debited).")
        @OptionGroup var socket: SocketOptions
        @Argument(help: "The sale id.") var saleID: String

        func run() throws {
            try reportingFailuresSync {
                let client = try socket.connect()
                let lines = try client.request(["command": "cancel", "saleID": saleID])
                if let data = lines.last, let error = daemonError(decodeLine(data)) { throw error }
                if !socket.json { print("sale \(saleID): cancel sent") }
            }
        }
    }
}

/// `cardctl water pulses N`: drive the daemon's simulated flow meter (tests, demo).
struct WaterMeterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meter",
        abstract: "Count pulses on a water daemon's simulated flow meter (tests and the demo).")
    @OptionGroup var socket: SocketOptions
    @Argument(help: "Pulses to count.") var count: Int

    func run() throws {
        try reportingFailuresSync {
            let client = try socket.connect()
            let lines = try client.request(WaterPulses(count: count))
            if let data = lines.last, let error = daemonError(decodeLine(data)) { throw error }
            if !socket.json { print("\(count) pulses counted") }
        }
    }

    struct WaterPulses: Encodable {
        var command = "water-pulses"
        var count: Int
    }
}

/// Writes a line to stdout at once (a stream's reader sees each event as it happens).
func printNow(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
