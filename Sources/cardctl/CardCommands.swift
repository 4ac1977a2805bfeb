import ArgumentParser
import CampusCard
import CardReader
import Foundation
import MifareClassic

/// `cardctl card ...`: the campus card application.
struct Card: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Issue, show, debit and load campus cards.",
        subcommands: [Issue.self, Show.self, Debit.self, Load.self, Water.self, Lock.self, Unlock.self, Cancel.self, Rekey.self,
                      SetLimits.self, SetPIN.self, ResetPINTries.self])

    struct Common: ParsableArguments {
        @OptionGroup var reader: ReaderOptions
        @Option(help: "The keystore file (cardctl keystore create).") var keystore: String
        @Option(help: "The durable journal of this terminal's card writes.") var journal = Card.defaultJournal
        @Option(help: "This terminal's id, 1-65535, unique per box (recorded on the card; with the journal's sequence it names each transaction). Required to move money.")
        var terminalID: UInt16?

        /// `movesMoney`: debits, loads and water operations record intents, which must name a real terminal.
        func open(movesMoney: Bool) throws -> (any Keystore, Terminal) {
            let store: FileKeystore
            do { store = try FileKeystore(path: keystore) } catch let error as KeystoreError { throw CLIError(.badInput, error.message) }
            let file: FileTerminalJournal
            do { file = try FileTerminalJournal(path: journal) } catch { throw CLIError(.badInput, "\(error)") }
            if movesMoney && (terminalID ?? 0) == 0 {
                throw CLIError(.badInput, "say which terminal this is: --terminal-id N (1-65535, unique per box; the settlement service tells transactions apart by terminal id and sequence)")
            }
            return (store, Terminal(id: terminalID ?? 0, journal: file))
        }
    }

    /// Prints a command's result: JSON with --json, else the line.
    static func report(_ common: Common, _ fields: [String: String], _ line: String) {
        if common.reader.json { try? printJSON(fields) } else { print(line) }
    }

    static func settled(_ common: Common, _ result: WaterSettlementResult) {
        report(common, ["result": "water-settled", "consumptionYuan": result.consumption.yuan, "refillYuan": result.refill.yuan,
                        "waterYuan": result.state.balance.yuan],
               "consumption \(result.consumption.yuan) yuan charged; refilled \(result.refill.yuan) yuan: water balance \(result.state.balance.yuan) yuan")
    }

    /// An amount typed in yuan; refusals are bad input.
    static func parse(_ amount: String) throws -> Fen {
        do { return try Fen(yuan: amount) } catch { throw CLIError(.badInput, "\(error)") }
    }

    static var defaultJournal: String {
        (ProcessInfo.processInfo.environment["HOME"] ?? "/tmp") + "/.local/state/onecard/cardctl-journal.jsonl"
    }

    /// Runs campus card operations in one card session.
    static func withOperations<T: Sendable>(_ common: Common, movesMoney: Bool = false,
                                            _ body: @escaping @Sendable (CampusCardOperations, Terminal) throws -> T) async throws -> T {
        let (keystore, terminal) = try common.open(movesMoney: movesMoney)
        let journal = terminal.journal as? FileTerminalJournal
        let before = (try? journal?.entries()) ?? []
        do {
            let connection = try await CardConnection.open(common.reader)
            let result = try await connection.session { session, reselect in
                do {
                    return try body(CampusCardOperations(session: session, keystore: keystore, reselect: reselect), terminal)
                } catch let error as CardOperationError {
                    throw CLIError(error.code == .journal ? .failed : .refused, error.message)
                }
            }
            reportDecisions(journal, before: before, failed: false)
            return result
        } catch {
            reportDecisions(journal, before: before, failed: true)
            throw error
        }
    }

    /// Says on stderr what this command decided about the terminal's operations: earlier interrupted ones, decided
    /// when their card came back, and — when the card left mid-command — whether this one was committed first.
    static func reportDecisions(_ journal: FileTerminalJournal?, before: [(intent: TransactionIntent, outcome: TransactionOutcome?)], failed: Bool) {
        guard let journal, let after = try? journal.entries() else { return }
        let wasOpen = Set(before.filter { $0.outcome == nil }.map(\.intent.terminalSequence))
        let known = Set(before.map(\.intent.terminalSequence))
        for (intent, outcome) in after {
            let what = "\(intent.kind.rawValue) of \(Fen(intent.amount).yuan) yuan (terminal sequence \(intent.terminalSequence))"
            if wasOpen.contains(intent.terminalSequence), let outcome {
                switch outcome {
                case .done(let balance, _): printError("interrupted \(what): done (balance after it: \(Fen(balance).yuan) yuan)")
                case .notDone: printError("interrupted \(what): not done, nothing moved")
                case .undetermined: printError("interrupted \(what): undetermined, the card no longer shows it; the settlement service decides")
                }
            } else if failed && !known.contains(intent.terminalSequence) {
                switch outcome {
                case .done(let balance, _): printError("this \(what) was committed before the card left: done, balance \(Fen(balance).yuan) yuan; any terminal completes the card's repair at its next tap")
                case nil: printError("this \(what) may or may not have happened: tap the card again here (`cardctl card show` with this --journal) to learn which, before repeating it")
                case .notDone, .undetermined: break
                }
            }
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a blank card (transport keys) with zero balances.")
        @OptionGroup var common: Common
        @Option(help: "Card serial number.") var serial: UInt32
        @Option(help: "Account id.") var account: UInt32
        @Option(help: "staff, student, identity or temporary.") var type: String
        @Option(help: "Expiry date YYYY-MM-DD (default: 4 years).") var expires: String?

        func run() async throws {
            try await reportingFailures {
                guard let cardType = Identity.CardType.allCases.first(where: { $0.name == type }) else {
                    throw CLIError(.badInput, "unknown card type \"\(type)\": use staff, student, identity or temporary")
                }
                let today = CardDay(Date())
                var expiry = CardDay(rawValue: today.rawValue + 4 * 365)
                if let expires {
                    let formatter = ISO8601DateFormatter()
                    formatter.formatOptions = [.withFullDate]
                    formatter.timeZone = TimeZone(secondsFromGMT: 8 * 3600)
                    guard let date = formatter.date(from: expires), CardDay(date) > today else {
                        throw CLIError(.badInput, "--expires \"\(expires)\" is not a future date YYYY-MM-DD")
                    }
                    expiry = CardDay(date)
                }
                let identity = Identity(serial: serial, account: account, type: cardType, keyVersion: 1, issued: today, expires: expiry)
                try await Card.withOperations(common) { ops, _ in try ops.issue(identity) }
                Card.report(common, ["result": "issued", "serial": "\(serial)", "account": "\(account)", "type": cardType.name, "expires": "\(expiry)"],
                            "issued card serial \(serial), account \(account), \(cardType.name), expires \(expiry)")
            }
        }
    }

    struct Report: Encodable {
        var uid: String
        var serial: UInt32
        var account: UInt32
        var type: String
        var status: String
        var expires: String
        var keyVersion: Int
        var balanceYuan: String
        var balanceFen: Int
        var counter: Int
        var lastOperation: String
        var debitedTodayYuan: String
        var perTransactionLimitYuan: String
        var dailyLimitYuan: String
        /// "not set", "set, 3 tries left", "blocked": never the verifier.
        var pin: String
        var resolution: String
        var waterYuan: String
        var waterCapYuan: String
        var waterUsedSinceRefillYuan: String
        var mac: String
        var log: [String]
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Identity, balance, counters, MAC status and log of a card.")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                let report = try await Card.withOperations(common) { ops, terminal in
                    try ops.checkApplication()
                    let identity = try ops.readIdentity()
                    var report = Report(
                        uid: try ops.session.uid().map { String(format: "%02X", $0) }.joined(), serial: identity.serial, account: identity.account, type: identity.type.name,
                        status: identity.status.name, expires: identity.expires.description, keyVersion: Int(identity.keyVersion),
                        balanceYuan: "?", balanceFen: -1, counter: -1, lastOperation: "?", debitedTodayYuan: "?",
                        perTransactionLimitYuan: identity.holder.effectiveLimits.perTransaction.yuan,
                        dailyLimitYuan: identity.holder.effectiveLimits.daily.yuan,
                        pin: identity.holder.pinVerifier == nil ? "not set" : "set", resolution: "?",
                        waterYuan: "?", waterCapYuan: "?", waterUsedSinceRefillYuan: "?", mac: "valid", log: [])
                    // A MAC mismatch is shown, not hidden: the technician sees what was tampered with.
                    var mismatches: [String] = []
                    do {
                        let state = try ops.tap(terminal: terminal)
                        report.balanceYuan = state.balance.yuan
                        report.balanceFen = state.balance.rawValue
                        report.counter = Int(state.record.counter)
                        report.lastOperation = "\(state.record.lastOperation)"
                        // "unknown" after a rebuilt record: the daily limit then asks for the PIN for the rest of the day.
                        let today = state.record.lastDay == CardDay(Date()) ? state.record.debitedToday : .zero
                        report.debitedTodayYuan = today == PurseRecord.unknownDebitedToday ? "unknown" : today.yuan
                        report.resolution = state.resolution.rawValue
                        if identity.holder.pinVerifier != nil {
                            let left = PINTries.blocked - state.record.wrongPINTries
                            report.pin = left == 0 ? "blocked (the card office resets it)" : "set, \(left) \(left == 1 ? "try" : "tries") left"
                        }
                        let macKey = try ops.keystore.macKey(uid: state.uid, version: state.macVersion)
                        report.log = try ops.readLog(uid: state.uid, macKey: macKey, version: identity.keyVersion).map {
                            "#\($0.counter) \($0.operation) \($0.amount.yuan) -> \($0.balanceAfter.yuan) (\($0.terminal))"
                        }
                    } catch let error as CardOperationError where error.code == .tampered {
                        mismatches.append("purse")
                    }
                    do {
                        let water = try ops.waterTap(terminal: terminal)
                        report.waterYuan = water.balance.yuan
                        report.waterCapYuan = water.record.cap.yuan
                        report.waterUsedSinceRefillYuan = Fen(water.record.balanceAfterRefill.rawValue - water.balance.rawValue).yuan
                    } catch let error as CardOperationError where error.code == .tampered {
                        mismatches.append("water wallet")
                    }
                    if !mismatches.isEmpty { report.mac = "MISMATCH in " + mismatches.joined(separator: " and ") }
                    return report
                }
                if common.reader.json {
                    try printJSON(report)
                } else {
                    print("card      \(report.uid)  serial \(report.serial)  account \(report.account)  \(report.type)  \(report.status)  expires \(report.expires)  key v\(report.keyVersion)")
                    print("purse     \(report.balanceYuan) yuan  counter \(report.counter)  last \(report.lastOperation)  today \(report.debitedTodayYuan)\(report.debitedTodayYuan == "unknown" ? "" : " yuan")  \(report.resolution)")
                    print("limits    \(report.perTransactionLimitYuan) yuan per transaction, \(report.dailyLimitYuan) yuan a day  PIN \(report.pin)")
                    print("water     \(report.waterYuan) yuan of \(report.waterCapYuan)  used since the last refill \(report.waterUsedSinceRefillYuan)")
                    print("MAC       \(report.mac)")
                    for line in report.log { print("log       \(line)") }
                }
                if report.mac != "valid" {
                    throw CLIError(.refused, "the card's \(report.mac.dropFirst("MISMATCH in ".count)) does not match its MAC: it was altered without the MAC key; keep the card and report it")
                }
            }
        }
    }

    struct Debit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Debit the purse by AMOUNT yuan (e.g. 12.50).")
        @OptionGroup var common: Common
        @Argument(help: "Amount in yuan, at most two decimals.") var amount: String
        @Option(help: "The holder's PIN, checked against the card when the debit is over a holder's limit. Visible in the process list: prefer --pin-stdin.")
        var pin: String?
        @Flag(help: "Read the holder's PIN from the first line of stdin.") var pinStdin = false

        func validate() throws {
            if pin != nil && pinStdin { throw ValidationError("give the PIN either with --pin or with --pin-stdin, not both") }
        }

        func run() async throws {
            try await reportingFailures {
                let fen = try Card.parse(amount)
                let pin = try pinStdin ? PINInput.read(fromStdin: true, confirm: false) : self.pin.map(PINInput.parse)
                let state = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.debit(fen, terminal: terminal, pin: pin) }
                Card.report(common, ["result": "debited", "amountYuan": fen.yuan, "balanceYuan": state.balance.yuan, "counter": "\(state.record.counter)"],
                            "debited \(fen.yuan) yuan: balance \(state.balance.yuan) yuan, counter \(state.record.counter)")
            }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load AMOUNT yuan onto the purse (needs the loader master).")
        @OptionGroup var common: Common
        @Argument(help: "Amount in yuan, at most two decimals.") var amount: String
        @Flag(help: "A subsidy (补助) rather than an account top-up (圈存).") var subsidy = false

        func run() async throws {
            try await reportingFailures {
                let fen = try Card.parse(amount)
                let kind: TransactionIntent.Kind = subsidy ? .purseSubsidy : .purseLoad
                let state = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.load(fen, terminal: terminal, kind: kind) }
                Card.report(common, ["result": "loaded", "amountYuan": fen.yuan, "balanceYuan": state.balance.yuan, "counter": "\(state.record.counter)"],
                            "loaded \(fen.yuan) yuan: balance \(state.balance.yuan) yuan, counter \(state.record.counter)")
            }
        }
    }
}

extension Card {
    struct Lock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lock a card on the card itself (lost, frozen or cancelled): every terminal refuses it, blacklist or not.")
        @OptionGroup var common: Common
        @Option(help: "lost, frozen or cancelled.") var reason = "lost"

        func run() async throws {
            try await reportingFailures {
                guard let status = Identity.Status.allCases.first(where: { $0.name == reason }), status != .normal else {
                    throw CLIError(.badInput, "--reason must be lost, frozen or cancelled")
                }
                try await Card.withOperations(common) { ops, _ in _ = try ops.setStatus(status) }
                Card.report(common, ["result": "locked", "status": status.name], "card locked: \(status.name)")
            }
        }
    }

    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unlock a card (status normal).")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                try await Card.withOperations(common) { ops, _ in _ = try ops.setStatus(.normal) }
                Card.report(common, ["result": "unlocked", "status": "normal"], "card unlocked")
            }
        }
    }
}

extension Card {
    struct Water: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The 10-yuan water wallet: debit (water controller), settle and refill (settlement station).",
            subcommands: [WaterDebit.self, WaterSettle.self, WaterRefill.self])
    }

    struct WaterDebit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "debit", abstract: "Debit AMOUNT yuan from the water wallet.")
        @OptionGroup var common: Common
        @Argument(help: "Amount in yuan, e.g. 0.05.") var amount: String

        func run() async throws {
            try await reportingFailures {
                let fen = try Card.parse(amount)
                let state = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.waterDebit(fen, terminal: terminal) }
                Card.report(common, ["result": "water-debited", "amountYuan": fen.yuan, "waterYuan": state.balance.yuan],
                            "water debited \(fen.yuan) yuan: water balance \(state.balance.yuan) yuan")
            }
        }
    }

    struct WaterSettle: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "settle", abstract: "Settle the consumption since the last refill and refill to the cap (needs the loader master).")
        @OptionGroup var common: Common
        @Option(help: "Settlement reference recorded on the card, unique per settlement (default: this terminal's id and sequence).")
        var reference: UInt32?

        func run() async throws {
            try await reportingFailures {
                let reference = reference
                let result = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.waterSettle(terminal: terminal, reference: reference) }
                Card.settled(common, result)
            }
        }
    }

    struct WaterRefill: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "refill", abstract: "Settle and refill by at most AMOUNT yuan (a partial refill, e.g. when the account is short).")
        @OptionGroup var common: Common
        @Argument(help: "The most to refill, in yuan.") var amount: String
        @Option(help: "Settlement reference recorded on the card, unique per settlement (default: this terminal's id and sequence).")
        var reference: UInt32?

        func run() async throws {
            try await reportingFailures {
                let maximum = try Card.parse(amount)
                let reference = reference
                let result = try await Card.withOperations(common, movesMoney: true) { ops, terminal in
                    try ops.waterSettle(terminal: terminal, reference: reference, maximumRefill: maximum)
                }
                Card.settled(common, result)
            }
        }
    }
}

extension Card {
    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a card (status cancelled, refused everywhere) and print the balances to refund to the account.")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                let (purse, water) = try await Card.withOperations(common) { ops, terminal in
                    let state = try ops.setStatus(.cancelled)
                    return (state.balance, try ops.waterTap(terminal: terminal).balance)
                }
                Card.report(common, ["result": "cancelled", "refundPurseYuan": purse.yuan, "refundWaterYuan": water.yuan],
                            "card cancelled: refund \(purse.yuan) yuan (purse) + \(water.yuan) yuan (water wallet) to the account")
            }
        }
    }
}

extension Card {
    struct Rekey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-key the card to the keystore's current version (after `cardctl keystore rotate`); needs the loader masters.",
            discussion: "Restartable: a re-key interrupted by a card pulled away is finished by running it again. Hold the card still: a sector trailer torn mid-write locks that sector for good.")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                let sectors = try await Card.withOperations(common) { ops, _ in try ops.rekey() }
                Card.report(common, ["result": "rekeyed", "sectors": sectors.sorted().map(String.init).joined(separator: ",")],
                            sectors.isEmpty ? "already on the current key version" : "re-keyed sectors \(sectors.sorted().map(String.init).joined(separator: ", "))")
            }
        }
    }
}
